"""A KerasTuner `build_model(hp)`, unchanged, under distune: its search space discovered from
the function itself, as KerasTuner does, and translated into distune's space syntax.

KerasTuner learns a space by running the function: each `hp.Int`, `hp.Float`, `hp.Choice`,
`hp.Boolean` call registers a hyperparameter. Some only appear for some values of others (a
loop over `hp.Int("num_layers", ...)`, a `conditional_scope`), so discovery builds the model
again with each value of every discrete hyperparameter until nothing new appears. Conditional
ones become branches of their parent's choice (a tree-structured space); a trial hands the
function a `HyperParameters` holding its sampled values.
"""

from __future__ import annotations

from typing import Any, Callable

MAX_BUILDS = 200  # discovery builds: a safety bound; a typical function needs a handful
MAX_VALUES = 100  # a stepped range with more values than this is searched as a range


class Untranslatable(ValueError):
    """A hyperparameter distune's space cannot express; the message names it."""


def values_hp(values: dict[str, Any]):
    """The `hp` a trial's build_model receives: its sampled values; anything the sample does
    not hold (an inactive branch) takes the function's own default, as in KerasTuner."""
    import keras_tuner as kt

    hp = kt.HyperParameters()
    hp.values.update(values)
    return hp


def discover(build_model: Callable) -> dict[str, Any]:
    """The function's search space in distune's YAML form. From the defaults, each discrete
    hyperparameter is moved to each of its other values (an Int to its ends) one at a time;
    a build that registers something new is explored the same way, one that does not ends."""
    import keras

    found: dict[str, Any] = {}  # name -> KerasTuner hyperparameter, first registration wins
    queue, seen, builds = [{}], set(), 0
    while queue and builds < MAX_BUILDS:
        values = queue.pop(0)
        before = len(found)
        hp = _build(build_model, values, found)
        builds += 1
        keras.backend.clear_session()
        if builds > 1 and len(found) == before:
            continue
        for h in list(found.values()):
            for v in _discrete(h):
                move = {**hp.values, h.name: v}
                key = repr(sorted(move.items(), key=lambda kv: kv[0]))
                if h.name in hp.values and hp.values[h.name] != v and key not in seen:
                    seen.add(key)
                    queue.append(move)
    return _translate(found)


def _build(build_model: Callable, values: dict[str, Any], found: dict[str, Any]):
    hp = values_hp(values)
    build_model(hp)
    for h in hp.space:
        found.setdefault(h.name, h)
    return hp


def _kind(h) -> str:
    return type(h).__name__


def _discrete(h) -> list:
    """The values worth a discovery build: every option of a choice, an Int's ends."""
    kind = _kind(h)
    if kind == "Choice":
        return list(h.values)
    if kind == "Boolean":
        return [False, True]
    if kind == "Int":  # its ends: a loop over range(hp.Int(...)) shows all it adds at the top
        return [h.min_value, h.max_value]
    return []


def _int_values(h) -> list[int]:
    step = h.step or 1
    if h.sampling == "linear" or h.step is None:
        return list(range(h.min_value, h.max_value + 1, step))
    out, v = [], h.min_value
    while v <= h.max_value and len(out) <= MAX_VALUES:
        out.append(int(v))
        v *= step
    return out


def _float_values(h) -> list[float]:
    out, k = [], 0
    while len(out) <= MAX_VALUES:
        v = h.min_value + k * h.step if h.sampling == "linear" else h.min_value * h.step ** k
        if v > h.max_value * (1 + 1e-12):
            break
        out.append(round(v, 12))
        k += 1
    return out


def _entry(h) -> Any:
    """One KerasTuner hyperparameter as distune's YAML entry (without its sub-spaces)."""
    kind = _kind(h)
    if kind == "Fixed":
        return h.value
    if kind == "Boolean":
        return {"choice": [False, True]}
    if kind == "Choice":
        return {"choice": list(h.values)}
    if kind == "Int":
        if h.sampling == "linear" or h.step is None or h.step == 1:
            if h.sampling != "linear":
                return {"logint": [h.min_value, h.max_value]}
            step = h.step or 1
            high = h.min_value + (h.max_value - h.min_value) // step * step
            return {"int": [h.min_value, high, step]} if high > h.min_value else h.min_value
        return {"choice": _int_values(h)}  # log sampling with a multiplicative step
    if kind == "Float":
        if h.step is not None:
            values = _float_values(h)
            if len(values) <= MAX_VALUES:
                return {"choice": values} if len(values) > 1 else values[0]
        log = h.sampling in ("log", "reverse_log")
        return {"loguniform" if log else "uniform": [float(h.min_value), float(h.max_value)]}
    raise Untranslatable(f"{h.name}: KerasTuner hyperparameter type {kind} has no distune form")


def _translate(found: dict[str, Any]) -> dict[str, Any]:
    """Flat entries, then each conditional one moved under its parent's options."""
    entries = {name: _entry(h) for name, h in found.items()}
    children: dict[str, list[tuple[str, list]]] = {}
    for name, h in found.items():
        if h.conditions:  # nested scopes list every ancestor; the innermost is the parent
            parent = h.conditions[-1]
            if parent.name not in found:
                raise Untranslatable(f"{name}: its condition's parent {parent.name} is no hyperparameter")
            children.setdefault(parent.name, []).append((name, list(parent.values)))
    for parent in children:
        entry = entries[parent]
        if not (isinstance(entry, dict) and "choice" in entry):
            if isinstance(entry, dict) and "int" in entry:
                low, high, step = entry["int"]
                entry = entries[parent] = {"choice": list(range(low, high + 1, step))}
            else:
                raise Untranslatable(f"{parent}: a conditional scope's parent must be a Choice, "
                                     "Boolean or short Int")

    done: set[str] = set()

    def subtree(parent: str) -> None:
        if parent in done:
            return
        done.add(parent)
        options = []
        for value in entries[parent]["choice"]:
            sub = {}
            for name, values in children.get(parent, ()):
                if value in values:
                    if name in children:
                        subtree(name)
                    sub[name] = entries[name]
            options.append({"value": value, "space": sub} if sub else value)
        entries[parent] = {"choice": options}

    nested = {name for kids in children.values() for name, _ in kids}
    for parent in children:
        subtree(parent)
    return {name: entries[name] for name in found if name not in nested}
