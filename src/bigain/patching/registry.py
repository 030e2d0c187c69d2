"""Installing bigain's hooks: in diffusers' own hook registry where it exists, torch hooks otherwise.

Registering in diffusers' `HookRegistry` (diffusers >= 0.33) under the name "bigain" lets bigain
stack with diffusers' caches (First Block Cache, Pyramid Attention Broadcast, ...): each can be
enabled and removed on its own. With an older diffusers the same functions run as plain torch
forward hooks. Either way a hook is a pre function `(module, args, kwargs) -> None | (args, kwargs)`
and a post function `(module, output) -> None | output`; removal leaves the module as it was.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

from torch import nn

try:  # diffusers >= 0.33
    from diffusers.hooks import HookRegistry, ModelHook
except ImportError:  # pragma: no cover - exercised by forcing USE_DIFFUSERS_REGISTRY = False
    HookRegistry = ModelHook = None  # type: ignore[assignment,misc]

HOOK_NAME = "bigain"
USE_DIFFUSERS_REGISTRY = HookRegistry is not None

Pre = Callable[[nn.Module, tuple, dict], Any]
Post = Callable[[nn.Module, Any], Any]


def _run_pre(fns: list[Pre], module: nn.Module, args: tuple, kwargs: dict) -> tuple[tuple, dict]:
    for fn in fns:
        res = fn(module, args, kwargs)
        if res is not None:
            args, kwargs = res
    return args, kwargs


def _run_post(fns: list[Post], module: nn.Module, output: Any) -> Any:
    for fn in fns:
        res = fn(module, output)
        if res is not None:
            output = res
    return output


class _WrappedForward:
    """A denoiser's forward with bigain's pre and post functions around it.

    Set as the module's `forward` instance attribute, as diffusers' registry does, so that
    `torch.compile(model)` traces the hooks and the model in one graph; but as an object rather than a
    closure, so that `copy.deepcopy` of the model copies it bound to the copy (a closure would keep
    calling the original). `inner`: the forward found on the instance at install (another wrapper),
    None for the class's own.
    """

    def __init__(self, module: nn.Module, pre: list[Pre], post: list[Post], inner: Any) -> None:
        self.module, self.pre, self.post, self.inner = module, pre, post, inner
        # the class's own forward, taken once: dynamo cannot trace `type(module).forward` inside the
        # call when the class is allowed in graph (diffusers' `maybe_allow_in_graph`, e.g. LTX-Video)
        self.cls_forward = type(module).forward
        bound = inner if inner is not None else module.forward
        functools.update_wrapper(self, bound)  # signature and name of the model's own forward

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        args, kwargs = _run_pre(self.pre, self.module, args, kwargs)
        if self.inner is not None:
            out = self.inner(*args, **kwargs)
        else:
            out = self.cls_forward(self.module, *args, **kwargs)
        return _run_post(self.post, self.module, out)


class _TorchPre:
    """A torch forward pre-hook running bigain's pre functions (an object, not a closure, so that
    `copy.deepcopy` of a patched model copies it with the functions it calls)."""

    def __init__(self, fns: list[Pre]) -> None:
        self.fns = fns

    def __call__(self, module: nn.Module, args: tuple, kwargs: dict) -> tuple[tuple, dict]:
        return _run_pre(self.fns, module, args, kwargs)


class _TorchPost:
    def __init__(self, fns: list[Post]) -> None:
        self.fns = fns

    def __call__(self, module: nn.Module, args: tuple, output: Any) -> Any:
        return _run_post(self.fns, module, output)


if ModelHook is not None:

    class _DiffusersHook(ModelHook):
        """All of bigain's pre and post functions for one module, as one named diffusers hook."""

        def __init__(self, pre: list[Pre], post: list[Post]) -> None:
            super().__init__()
            self.pre, self.post = pre, post

        def pre_forward(self, module: nn.Module, *args: Any, **kwargs: Any) -> tuple[tuple, dict]:
            return _run_pre(self.pre, module, args, kwargs)

        def post_forward(self, module: nn.Module, output: Any) -> Any:
            return _run_post(self.post, module, output)


class HookSet:
    """The hooks of one patch, grouped by module, installed together and removed together."""

    def __init__(self) -> None:
        self._pre: dict[nn.Module, list[Pre]] = {}
        self._post: dict[nn.Module, list[Post]] = {}
        self._order: list[nn.Module] = []
        self._wrapped: list[nn.Module] = []  # modules whose forward bigain wraps itself (the denoiser)
        self._wrappers: list[tuple[nn.Module, _WrappedForward]] = []
        self._handles: list[Any] = []
        self._registered: list[nn.Module] = []

    def _track(self, module: nn.Module, wrap: bool) -> None:
        if module not in self._pre:
            self._pre[module], self._post[module] = [], []
            self._order.append(module)
        if wrap and module not in self._wrapped:
            self._wrapped.append(module)

    def pre(self, module: nn.Module, fn: Pre, wrap: bool = False) -> None:
        """Add a pre function; `wrap`: install by wrapping the module's forward (`_WrappedForward`; the
        denoiser: one graph under torch.compile, and a deep copy of the model stays bound to itself)."""
        self._track(module, wrap)
        self._pre[module].append(fn)

    def post(self, module: nn.Module, fn: Post, wrap: bool = False) -> None:
        self._track(module, wrap)
        self._post[module].append(fn)

    def rebind(self) -> None:
        """Rebuild the diffusers registries of a deep copy. A registry wraps `module.forward` in a
        closure over the module it was made for, which `copy.deepcopy` does not follow: a copy's
        sub-layers would run the original's hooks and weights. Re-registering the copied hooks (all
        of them, in order, diffusers' own included) on the copied modules binds them to the copy."""
        for m in self._registered:
            registry = m.__dict__.get("_diffusers_hook")
            if registry is None:
                continue
            hooks = [(name, registry.hooks[name]) for name in registry._hook_order]
            del m._diffusers_hook
            m.__dict__.pop("forward", None)
            fresh = HookRegistry.check_if_exists_or_initialize(m)
            for name, hook in hooks:
                fresh.register_hook(hook, name)

    def install(self) -> None:
        for m in self._order:
            pre, post = self._pre[m], self._post[m]
            if m in self._wrapped:
                wrapper = _WrappedForward(m, pre, post, m.__dict__.get("forward"))
                m.forward = wrapper
                self._wrappers.append((m, wrapper))
                continue
            if USE_DIFFUSERS_REGISTRY:
                HookRegistry.check_if_exists_or_initialize(m).register_hook(_DiffusersHook(pre, post), HOOK_NAME)
                self._registered.append(m)
                continue
            if pre:
                self._handles.append(m.register_forward_pre_hook(_TorchPre(pre), with_kwargs=True))
            if post:
                self._handles.append(m.register_forward_hook(_TorchPost(post)))

    def remove(self) -> None:
        for m, wrapper in self._wrappers:
            if m.__dict__.get("forward") is wrapper:
                if wrapper.inner is None:
                    del m.forward
                else:
                    m.forward = wrapper.inner
            else:  # wrapped again since (another library's hook): leave it, doing nothing
                wrapper.pre, wrapper.post = [], []
        self._wrappers.clear()
        for h in self._handles:
            h.remove()
        self._handles.clear()
        for m in self._registered:
            _unregister(m)
        self._registered.clear()


def _unregister(module: nn.Module) -> None:
    registry = getattr(module, "_diffusers_hook", None)
    if registry is None:
        return
    registry.remove_hook(HOOK_NAME, recurse=False)
    if registry.hooks:
        return
    # Nothing else is registered: leave the module exactly as an unhooked one (no registry, the
    # class's own forward instead of an instance attribute).
    del module._diffusers_hook
    fwd = module.__dict__.get("forward")
    if fwd is not None and getattr(fwd, "__func__", None) is type(module).forward:
        del module.forward
