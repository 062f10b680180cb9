"""Save and load time of ``datamint_core`` against ``mlflow.pyfunc``, on the same trivial model.

Measures, in milliseconds, with one ``ConstantClassifier`` instance (``bench/_models.py``: a
``BaseDatamintModel`` whose handler returns a constant annotation) saved every way into a
fresh directory per repetition:

- save, ours: ``datamint_core.save_model(model, path, pip_requirements=REQS)``;
- save, anchor: ``mlflow.pyfunc.save_model(path, python_model=model, pip_requirements=REQS,
  input_example=EXAMPLE)``; both get the same explicit ``REQS``
  (``get_default_pip_requirements(model)``), so neither runs MLflow's requirement inference,
  and the anchor gets the input example ``datamint_core.save_model`` writes by default;
- save with each side's inferred requirements: ``datamint_core.save_model`` without
  ``pip_requirements`` (reads the pickle's opcodes and the imports of the model's code,
  maps them to installed distributions, bundles the datamint wheel) against
  ``mlflow.pyfunc.save_model`` without them (MLflow loads the model in a subprocess);
- load, ours: ``datamint_core.load_model(our_path)`` (returns the model, ready to predict);
- load, anchor: ``mlflow.pyfunc.load_model(anchor_path)``;
- load through pyfunc of our model, for context: ``mlflow.pyfunc.load_model(our_path)``,
  the path a scoring server takes.

Repetitions are interleaved, the order rotated each repetition, after one untimed warm-up of
each; figures are medians. MLflow's warnings (pickle advice, a requirement that is not
installed) are silenced; the checks behind them still run, for both sides alike.

Targets (issue #10): save and load each <= 1.1x their ``mlflow.pyfunc`` counterpart with the
same requirements; inferring requirements a fraction of MLflow's inference. The script
reports whether each is met; it never fails on the numbers.

Run from the repository root::

    .venv/core/bin/python bench/save_load.py [--repeats 10]
"""

from __future__ import annotations

import argparse
import gc
import logging
import tempfile
import time
import warnings
from collections.abc import Callable
from pathlib import Path

import mlflow.pyfunc
from _common import Summary, print_header, print_ratio, print_table
from _models import BENIGN_FINDING, ConstantClassifier

import datamint_core
from datamint_core.flavor import get_default_pip_requirements
from datamint_core.input_example import default_input_example

TARGET_RATIO = 1.1
#: "A fraction of MLflow's time" for the inferred-requirements save.
INFERENCE_TARGET_RATIO = 0.25

SAVE_OURS = "save  ours:   datamint_core.save_model(reqs)"
SAVE_ANCHOR = "save  anchor: mlflow.pyfunc.save_model(reqs)"
SAVE_OURS_DEFAULT = "save  ours:   datamint_core.save_model()  [inferred reqs]"
SAVE_ANCHOR_DEFAULT = "save  anchor: mlflow.pyfunc.save_model()  [inferred reqs]"
LOAD_OURS = "load  ours:   datamint_core.load_model"
LOAD_ANCHOR = "load  anchor: mlflow.pyfunc.load_model"
LOAD_OURS_VIA_PYFUNC = "load  ours via mlflow.pyfunc.load_model"


def _timed_ms(action: Callable[[], object]) -> float:
    gc.collect()
    start = time.perf_counter()
    action()
    return (time.perf_counter() - start) * 1000.0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=10, help="timed repetitions of each")
    args = parser.parse_args()

    logging.getLogger("mlflow").setLevel(logging.ERROR)
    warnings.simplefilter("ignore")
    model = ConstantClassifier()
    requirements = get_default_pip_requirements(model)
    example = default_input_example(model.get_supported_modes())

    print_header(
        f"Save/load: datamint_core vs mlflow.pyfunc, one trivial model, {args.repeats} "
        f"repetitions each\nexplicit requirements (reqs): {requirements}"
    )
    with tempfile.TemporaryDirectory(prefix="datamint-bench-") as root:
        def directory(kind: str, repetition: int | str) -> str:
            return str(Path(root) / f"{kind}-{repetition}")

        def save_actions(repetition: int | str) -> dict[str, Callable[[], object]]:
            return {
                SAVE_OURS: lambda: datamint_core.save_model(
                    model, directory("ours", repetition), pip_requirements=requirements),
                SAVE_ANCHOR: lambda: mlflow.pyfunc.save_model(
                    directory("anchor", repetition), python_model=model,
                    pip_requirements=requirements, input_example=example),
                SAVE_OURS_DEFAULT: lambda: datamint_core.save_model(
                    model, directory("ours-default", repetition)),
                SAVE_ANCHOR_DEFAULT: lambda: mlflow.pyfunc.save_model(
                    directory("anchor-default", repetition), python_model=model,
                    input_example=example),
            }

        def load_actions(repetition: int | str) -> dict[str, Callable[[], object]]:
            return {
                LOAD_OURS: lambda: datamint_core.load_model(directory("ours", repetition)),
                LOAD_ANCHOR: lambda: mlflow.pyfunc.load_model(directory("anchor", repetition)),
                LOAD_OURS_VIA_PYFUNC: lambda: mlflow.pyfunc.load_model(
                    directory("ours", repetition)),
            }

        # Warm-up, untimed: first-call imports and caches. It doubles as a check that what
        # is timed works: the loaded model must predict what the saved one did.
        for action in save_actions("warm-up").values():
            action()
        loaded = {label: action() for label, action in load_actions("warm-up").items()}
        prediction = loaded[LOAD_OURS].predict([{"pixel_data": {"encoding": "list",
                                                                "data": [[0.0]]}}])
        if prediction != [[BENIGN_FINDING]]:
            raise SystemExit(f"the model loaded by datamint_core.load_model predicted "
                             f"{prediction!r}, expected [[{BENIGN_FINDING!r}]]")

        samples: dict[str, list[float]] = {
            label: [] for label in [*save_actions(0), *load_actions(0)]
        }
        for repetition in range(args.repeats):
            for actions in (save_actions(repetition), load_actions(repetition)):
                labels = list(actions)
                shift = repetition % len(labels)
                for label in labels[shift:] + labels[:shift]:
                    samples[label].append(_timed_ms(actions[label]))

    print_table([(label, Summary.of(values)) for label, values in samples.items()],
                unit="ms", digits=2)
    print()
    print_ratio("save, same explicit reqs (ours/anchor)", samples[SAVE_OURS],
                samples[SAVE_ANCHOR], TARGET_RATIO)
    print_ratio("save, each side's inferred reqs (ours/anchor)", samples[SAVE_OURS_DEFAULT],
                samples[SAVE_ANCHOR_DEFAULT], INFERENCE_TARGET_RATIO)
    print_ratio("load (ours/anchor)", samples[LOAD_OURS], samples[LOAD_ANCHOR], TARGET_RATIO)
    print_ratio("load of ours via mlflow.pyfunc / anchor load", samples[LOAD_OURS_VIA_PYFUNC],
                samples[LOAD_ANCHOR], target=None)


if __name__ == "__main__":
    main()
