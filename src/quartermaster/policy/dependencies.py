"""The runtime's one policy cache (compiled Rego per policy version), made on first use."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends

from quartermaster.api.deps import RuntimeDep
from quartermaster.policy.engine import PolicyCache
from quartermaster.policy.sandbox import PolicySandbox
from quartermaster.runtime import Runtime


def policy_cache(runtime: Runtime) -> PolicyCache:
    """Closed with the runtime (the sandbox's worker processes)."""
    return runtime.service(
        "policy_cache", PolicyCache, lambda: PolicyCache(sandbox=PolicySandbox())
    )


def _cache_dep(runtime: RuntimeDep) -> PolicyCache:
    return policy_cache(runtime)


PolicyCacheDep = Annotated[PolicyCache, Depends(_cache_dep)]
