# Sourced by the scripts: the offline data mirror and quiet TensorFlow logs.
if [ -z "${KSUITE_DATA_DIR:-}" ] && [ -d "$(dirname "${BASH_SOURCE[0]}")/../../shared/data" ]; then
    KSUITE_DATA_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")/../../shared/data" && pwd)"
    export KSUITE_DATA_DIR
fi
export TF_CPP_MIN_LOG_LEVEL=${TF_CPP_MIN_LOG_LEVEL:-2}
