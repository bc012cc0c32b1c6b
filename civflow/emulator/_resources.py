"""Model and LoRA lookups (`GET /v2/resources/{air}`), shaped as the API's ResourceInfo.

A handful of AIRs have real names; any other well-formed AIR exists too (a studio's
own models must work in a dry run), unless the emulator is told it is missing
(`missing_airs`) or to know only the named ones (`known_airs_only`).
"""

from __future__ import annotations

import hashlib
from typing import Any

from civflow.catalog import parse_air

# air → (model name, version name, size in bytes, file format)
_KNOWN: dict[str, tuple[str, str, int, str]] = {
    "urn:air:sdxl:checkpoint:civitai:101055@128078": (
        "SD XL", "v1.0 VAE fix", 6_938_078_334, "safeTensor"),
    "urn:air:sdxl:lora:civitai:200000@250000": (
        "Emulator Style LoRA", "v2.5", 228_455_000, "safeTensor"),
    "urn:air:sdxl:lora:civitai:123456@789012": (
        "Detail Tweaker XL", "v1.0", 24_000_000, "safeTensor"),
    "urn:air:other:upscaler:civitai:147759@164821": (
        "4x-Remacri", "v1", 67_000_000, "pickleTensor"),
    "urn:air:flux1:diffuser:civitai:618692@691639": (
        "FLUX", "Dev", 23_802_932_552, "safeTensor"),
    "urn:air:flux1:checkpoint:civitai:618692@691639": (
        "FLUX", "Dev", 23_802_932_552, "safeTensor"),
    "urn:air:sd1:checkpoint:civitai:4384@128713": (
        "DreamShaper", "8", 2_132_625_894, "safeTensor"),
    "urn:air:sd1:embedding:civitai:7808@9208": (
        "EasyNegative", "v1", 24_655, "safeTensor"),
    "urn:air:sdxl:checkpoint:civitai:827184@2514310": (
        "WAI-illustrious-SDXL", "v14.0", 6_938_000_000, "safeTensor"),
    "urn:air:sdxl:vae:civitai:296576@333245": (
        "SDXL VAE", "v1", 334_641_164, "safeTensor"),
    "urn:air:flux1:lora:civitai:667004@746484": (
        "Flux Realism LoRA", "v1", 22_000_000, "safeTensor"),
}


def known_airs() -> list[str]:
    return sorted(_KNOWN)


def resource_info(air: str, *, missing: frozenset[str] = frozenset(),
                  known_only: bool = False) -> dict[str, Any] | None:
    """ResourceInfo for an AIR, or None when it does not exist here."""
    text = air.strip()
    key = text.lower()
    if key in {m.lower() for m in missing}:
        return None
    named = {k.lower(): (k, v) for k, v in _KNOWN.items()}
    if key in named:
        text, (name, version, size, file_format) = named[key]
    else:
        parsed = parse_air(text)
        if known_only or parsed is None:
            return None
        name = f"{(parsed.type or 'model').title()} {parsed.id}"
        version, size, file_format = f"v{parsed.version or 1}", 100_000_000, "safeTensor"
    digest = hashlib.sha256(text.encode()).hexdigest()
    return {
        "air": text,
        "size": size,
        "hashes": {"SHA256": digest.upper(), "AutoV2": digest[:10].upper()},
        "downloadUrls": [f"https://civitai.com/api/download/models/"
                         f"{text.rsplit('@', 1)[-1]}"],
        "resourceName": name,
        "versionName": version,
        "checkPermission": False,
        "canGenerate": True,
        "fileFormat": file_format,
        "hasMatureContentRestriction": False,
        "hasNSFWContentRestriction": False,
    }
