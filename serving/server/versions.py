"""Version folders on disk, version policies, and the records of a model's versions."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from serving.server.servable import Servable

log = logging.getLogger("serving.server")

INT64_MAX = 2**63 - 1

# ModelVersionStatus.State
START, LOADING, AVAILABLE, UNLOADING, END = "START", "LOADING", "AVAILABLE", "UNLOADING", "END"
STATE_ENUM = {START: 10, LOADING: 20, AVAILABLE: 30, UNLOADING: 40, END: 50}


@dataclass
class Version:
    version: int
    path: Path
    state: str = START
    error_code: str = "OK"
    error_message: str = ""
    servable: Servable | None = None
    failed: bool = False


@dataclass
class Model:
    name: str
    config: Any  # ModelConfig proto
    versions: dict[int, Version] = field(default_factory=dict)
    labels: dict[str, int] = field(default_factory=dict)
    aspired: set[int] = field(default_factory=set)
    removed: bool = False
    # versions from a previous base_path: they answer until a version of the new one is available
    retiring: dict[int, Version] = field(default_factory=dict)
    # labels of the config that wait for their version to become available
    pending_labels: dict[str, int] = field(default_factory=dict)
    path_error: str = ""  # the last base-path error logged (logged once until it changes)

    def find(self, version: int) -> Version | None:
        rec = self.versions.get(version)
        if (rec is None or rec.state != AVAILABLE) and version in self.retiring:
            return self.retiring[version]
        return rec

    def available(self) -> list[int]:
        live = {v for v, r in self.versions.items() if r.state == AVAILABLE}
        live |= {v for v, r in self.retiring.items() if r.state == AVAILABLE}
        return sorted(live)


def disk_versions(base: Path) -> dict[int, Path]:
    """Integer version folders holding a SavedModel. Raises OSError when ``base`` itself cannot
    be listed (missing, renamed away, permission denied); a version folder that cannot be read
    is left out with a warning, so it never stops the others."""
    out: dict[int, Path] = {}
    for child in list(base.iterdir()):
        if not child.name.isdigit():
            continue
        try:
            ok = child.is_dir() and ((child / "saved_model.pb").exists()
                                     or (child / "saved_model.pbtxt").exists())
        except OSError as exc:
            log.warning("skipping version folder %s: %s", child, exc)
            continue
        if ok:
            v = int(child.name)
            if v <= INT64_MAX and (v not in out or child.name == str(v)):
                out[v] = child
    return out


def aspired_versions(config, on_disk: dict[int, Path]) -> set[int]:
    """The versions the model's version policy wants among those on disk."""
    policy = config.model_version_policy
    which = policy.WhichOneof("policy_choice")
    versions = sorted(on_disk)
    if which == "all":
        return set(versions)
    if which == "specific":
        return {v for v in policy.specific.versions if v in on_disk}
    n = policy.latest.num_versions if which == "latest" else 1
    return set(versions[-max(n, 1):]) if versions else set()
