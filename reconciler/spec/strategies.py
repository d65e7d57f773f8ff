"""The RolloutStrategy kind: how a module's new version reaches its nodes (Canary, BlueGreen,
Rolling, Regional, ABTest), the analysis that judges each step, and its approval gates.

Where it sits: a fleet model beside `reconciler.spec.models` (the RolloutStrategy document wraps
`RolloutStrategySpec`); the loader (`reconciler.spec.assemble`) checks what refers across documents
(a Regional strategy's `perRegion`, gates past the last step), and the rollout machine
(`reconciler.planner.machine`) runs the steps these describe.
"""

from __future__ import annotations

import itertools
from enum import StrEnum
from typing import Annotated, Literal, Self

from pydantic import Field, field_validator, model_validator
from pydantic.alias_generators import to_camel

from reconciler.spec.fields import Name, Spec

__all__ = [
    "PARAM_KEYS",
    "ABTestParams",
    "Analysis",
    "ApprovalGates",
    "BlueGreenParams",
    "CanaryParams",
    "RegionalParams",
    "RollingParams",
    "RolloutStrategySpec",
    "StrategyType",
]


class StrategyType(StrEnum):
    CANARY = "Canary"
    BLUE_GREEN = "BlueGreen"
    ROLLING = "Rolling"
    REGIONAL = "Regional"
    AB_TEST = "ABTest"


class CanaryParams(Spec):
    steps: list[Annotated[int, Field(ge=1, le=100)]] = Field(default_factory=lambda: [10, 25, 50, 100], min_length=1)
    step_seconds: float = Field(30, ge=0, le=86400)

    @field_validator("steps")
    @classmethod
    def _increasing(cls, steps: list[int]) -> list[int]:
        if any(b <= a for a, b in itertools.pairwise(steps)):
            raise ValueError("steps must increase strictly")
        if steps[-1] != 100:
            raise ValueError("the last step must be 100")
        return steps


class BlueGreenParams(Spec):
    preview_seconds: float = Field(30, ge=0, le=86400)
    auto_promote: bool = True
    keep_previous_seconds: float = Field(300, ge=0, le=86400)


class RollingParams(Spec):
    batch_size: int = Field(1, ge=1, le=1000)
    batch_seconds: float = Field(30, ge=0, le=86400)


class RegionalParams(Spec):
    order: list[Name] | None = Field(None, description="default: the Fleet's region order")
    region_seconds: float = Field(60, ge=0, le=86400)
    per_region: Name | None = Field(None, description="the strategy used inside each region")


class ABTestParams(Spec):
    split: int = Field(20, ge=1, le=99, description="percent of requests to B")
    duration_seconds: float = Field(300, ge=0, le=604800)
    sticky_header: str = Field("X-Hotswap-User", min_length=1)
    winner: Literal["auto", "approval"] = "auto"
    metric: Literal["errorRate", "latencyP99"] = "errorRate"


class Analysis(Spec):
    """How a step is judged from the new version's traffic (reconciler.planner.analysis)."""

    max_error_rate: float = Field(
        0.01,
        ge=0,
        le=1,
        description="the highest error rate the new version may have; failure is judged on every pass of a step"
        " and fails fast, before minRequests, once it is certain or clear (99% Wilson bound above this rate and"
        " above the stable version's)",
    )
    max_latency_p99_ms: float | None = Field(None, gt=0, description="the highest p99 latency; none: not judged")
    min_requests: int = Field(
        50,
        ge=0,
        description="requests the new version needs before a step passes on its traffic; 0: whatever it got",
    )
    on_no_traffic: Literal["pause", "proceed"] = Field(
        "pause",
        description="fewer than minRequests when a step's time is up: pause (wait for traffic) or proceed;"
        " a BlueGreen preview runs at 0% and gets requests only with X-Hotswap-Version",
    )

    @property
    def waits_for_traffic(self) -> bool:
        """Would a step that gets no requests wait for them for ever?"""
        return self.min_requests > 0 and self.on_no_traffic == "pause"


class ApprovalGates(Spec):
    before_start: bool = False
    gates: list[Annotated[int, Field(ge=0)]] = Field(default_factory=list)


PARAM_KEYS: dict[StrategyType, str] = {
    StrategyType.CANARY: "canary",
    StrategyType.BLUE_GREEN: "blue_green",
    StrategyType.ROLLING: "rolling",
    StrategyType.REGIONAL: "regional",
    StrategyType.AB_TEST: "ab_test",
}


class RolloutStrategySpec(Spec):
    type: StrategyType
    canary: CanaryParams | None = None
    blue_green: BlueGreenParams | None = None
    rolling: RollingParams | None = None
    regional: RegionalParams | None = None
    ab_test: ABTestParams | None = None
    analysis: Analysis | None = Field(
        None,
        description="left out: a default that can always progress. BlueGreen and Rolling move on once the new"
        " version is loaded and healthy on every node of the step, judging whatever traffic it gets and never"
        " waiting for any (maxErrorRate 0.01, minRequests 0, onNoTraffic proceed); Canary and ABTest judge"
        " traffic (maxErrorRate 0.01, minRequests 50, onNoTraffic pause); Regional's settle steps use its"
        " perRegion strategy's analysis (none: as Rolling). Given: exactly what it says, for every step",
    )
    approval: ApprovalGates = Field(default_factory=ApprovalGates)
    auto_rollback: bool = True

    @model_validator(mode="after")
    def _params_match_type(self) -> Self:
        own = PARAM_KEYS[self.type]
        for key in PARAM_KEYS.values():
            if key != own and getattr(self, key) is not None:
                raise ValueError(f"`{to_camel(key)}` is set but the type is {self.type.value}")
        if getattr(self, own) is None:
            defaults: dict[str, type[Spec]] = {
                "canary": CanaryParams,
                "blue_green": BlueGreenParams,
                "rolling": RollingParams,
                "regional": RegionalParams,
                "ab_test": ABTestParams,
            }
            object.__setattr__(self, own, defaults[own]())
        return self

    def step_count(self) -> int:
        if self.type is StrategyType.CANARY and self.canary is not None:
            return len(self.canary.steps)
        return 1
