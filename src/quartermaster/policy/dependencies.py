"""The runtime's one policy cache (compiled Rego per policy version), made on first use."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends

from quartermaster.api.deps import RuntimeDep
from quartermaster.policy.engine import PolicyCache
from quartermaster.policy.sandbox import PolicySandbox
from quartermaster.runtime import Runtime


def policy_cache(runtime: Runtime) -> PolicyCache:
    cache = runtime.services.get("policy_cache")
    if not isinstance(cache, PolicyCache):
        cache = runtime.services.setdefault("policy_cache", PolicyCache(sandbox=PolicySandbox()))
    return cache


def _cache_dep(runtime: RuntimeDep) -> PolicyCache:
    return policy_cache(runtime)


PolicyCacheDep = Annotated[PolicyCache, Depends(_cache_dep)]
