"""The ``ksuite`` commands: above the apps (``apps/``), the training core (``shared/``) and the
serving path (``serving/``). Everything per-app is read from the app registry
(``apps.registry()``): nothing here lists the apps again."""
