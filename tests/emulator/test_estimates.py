"""Estimates tell the truth: for every catalogued variant civflow prices offline, the
estimate equals what the emulator charges (rounded to whole Buzz, tips included)."""

from __future__ import annotations

import httpx

from civflow import catalog
from civflow.emulator import EmulatorConfig, start_emulator
from civflow.expand import Instance
from civflow.planning import estimate_instance

TIPS = {"civitai": 0.1, "creators": 0.05}


def test_every_offline_estimate_equals_the_charge() -> None:
    priced = []
    for variant in catalog.input_variants():
        inst = Instance("x", "x", variant.step_type, variant.example, {})
        estimate = estimate_instance(inst, tuple(TIPS.values()))
        if estimate is not None and isinstance(variant.example, dict):
            priced.append((variant, estimate))
    assert len(priced) >= 20
    with start_emulator(EmulatorConfig(time_scale=0)) as emu, \
            httpx.Client(base_url=emu.url, headers={"Authorization": "Bearer k"},
                         timeout=60) as client:
        for variant, estimate in priced:
            body = {"steps": [{"$type": variant.step_type, "input": variant.example}],
                    "tips": TIPS}
            answer = client.post("/v2/consumer/workflows", params={"whatif": "true"},
                                 json=body)
            assert answer.status_code == 200, (variant.label, answer.text)
            assert answer.json()["cost"]["total"] == estimate, variant.label
