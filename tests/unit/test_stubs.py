"""`_bartizan.pyi` against the compiled extension: the same classes, methods and
parameters, with the same defaults where the runtime shows them. A change to a
`#[pyo3(signature = ...)]` in src/ without one to the stub fails here."""

import ast
import inspect
from pathlib import Path

import bartizan._bartizan as ext
import pytest

STUB = Path(ext.__file__).with_name("_bartizan.pyi")
CLASSES = {
    node.name: node for node in ast.parse(STUB.read_text()).body if isinstance(node, ast.ClassDef)
}


def stub_members(cls):
    return {n.name: n for n in CLASSES[cls].body if isinstance(n, ast.FunctionDef)}


def stub_params(func):
    """(name, default) of each parameter after self; the default as source text."""
    args = func.args
    positional = args.args[1:]
    defaults = [None] * (len(positional) - len(args.defaults)) + list(args.defaults)
    pairs = list(zip(positional, defaults, strict=True))
    pairs += list(zip(args.kwonlyargs, args.kw_defaults, strict=True))
    return [(a.arg, None if d is None else ast.unparse(d)) for a, d in pairs]


def runtime_params(obj):
    """The same from the extension's text signature; PyO3 shows some defaults as `...`."""
    signature = inspect.signature(obj)
    out = []
    for p in signature.parameters.values():
        if p.name in ("self", "$self"):
            continue
        default = None if p.default is inspect.Parameter.empty else repr(p.default)
        out.append((p.name, default))
    return out


def test_the_stub_covers_the_public_classes():
    assert set(CLASSES) == {"Server", "FileWrapper"}
    for name in CLASSES:
        assert getattr(ext, name).__module__ == "bartizan._bartizan"


@pytest.mark.parametrize("cls", ["Server", "FileWrapper"])
def test_constructor_matches(cls):
    stub = stub_params(stub_members(cls)["__init__"])
    runtime = runtime_params(getattr(ext, cls))
    assert [n for n, _ in stub] == [n for n, _ in runtime]
    for (name, stub_default), (_, default) in zip(stub, runtime, strict=True):
        if default != "Ellipsis":
            assert stub_default == default, name


def test_server_methods_and_properties_match():
    members = stub_members("Server")
    properties = {
        n
        for n, f in members.items()
        if any(isinstance(d, ast.Name) and d.id == "property" for d in f.decorator_list)
    }
    public = {n for n in dir(ext.Server) if not n.startswith("_")}
    assert {n for n in members if not n.startswith("_")} == public
    assert properties == {n for n in public if inspect.isgetsetdescriptor(getattr(ext.Server, n))}
    for name in public - properties:
        assert stub_params(members[name]) == runtime_params(getattr(ext.Server, name)), name
