# Helpers shared by scripts/test and scripts/demo; sourced, not run.
PYTHON="${PYTHON:-python3}"

# ensure_venv NAME: create .venv/NAME if missing and install what it needs.
#   core: datamint with the test and batch extras (SQLite store, Hypothesis, pyarrow, the
#         image readers) on mlflow-skinny only, as a serving image has it: no torch and no
#         full mlflow. Tests that need `mlflow server` run it from .venv/full (see
#         DATAMINT_TEST_MLFLOW in scripts/test).
#   demo: torch first (pinned: an unpinned torch pulls GB of CUDA), then
#         datamint[lightning,sqlite,images] for the main job's training step and its
#         overlay picture.
#   mlserver: datamint[test,mlserver] on mlflow-skinny, no torch: MLServer 1.7 resolves an
#         older fastapi/starlette than core, so the MLServer runtime and `datamint serve`
#         on that stack are tested here.
#   full: torch first (pinned), then datamint[torch,lightning,train,test,test-server,
#         test-full,spark]: the full mlflow, whose `mlflow server` every suite's tracking-server
#         fixture runs, MONAI (UNetPPTrainer; the metrics' reference) and a real local Spark
#         for the batch engine tests (Java 17 must be installed).
ensure_venv() {
    local name="$1" venv=".venv/$1"
    if [ ! -x "$venv/bin/python" ]; then
        "$PYTHON" -m venv "$venv"
    fi
    local pip=("$venv/bin/python" -m pip install --quiet --disable-pip-version-check)
    case "$name" in
        core) "${pip[@]}" -e ".[test,batch]" ;;
        mlserver) "${pip[@]}" -e ".[test,mlserver]" ;;
        demo)
            "${pip[@]}" -c ci/constraints.txt torch
            "${pip[@]}" -c ci/constraints.txt -e ".[lightning,sqlite,images]"
            ;;
        full)
            "${pip[@]}" -c ci/constraints.txt torch
            "${pip[@]}" -c ci/constraints.txt -e ".[torch,lightning,train,test,test-server,test-full,spark]"
            ;;
        *) echo "unknown environment $name" >&2; return 2 ;;
    esac
}

# run_pytest VENV ARGS...: pytest in VENV; "no tests ran" (exit 5) is a failure too.
run_pytest() {
    local venv="$1"; shift
    local status=0
    "$venv/bin/python" -m pytest "$@" || status=$?
    if [ "$status" -eq 5 ]; then
        echo "pytest collected no tests in $venv: treating as a failure" >&2
        return 1
    fi
    return "$status"
}
