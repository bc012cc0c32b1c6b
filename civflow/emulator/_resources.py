"""The small set of AIRs the emulator knows, shaped as the API's ResourceInfo."""

from __future__ import annotations

import hashlib
from typing import Any

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


def resource_info(air: str) -> dict[str, Any] | None:
    """ResourceInfo for a known AIR (matched case-insensitively), else None."""
    key = air.strip().lower()
    for known, (name, version, size, file_format) in _KNOWN.items():
        if known.lower() == key:
            digest = hashlib.sha256(known.encode()).hexdigest()
            return {
                "air": known,
                "size": size,
                "hashes": {"SHA256": digest.upper(), "AutoV2": digest[:10].upper()},
                "downloadUrls": [f"https://civitai.com/api/download/models/"
                                 f"{known.rsplit('@', 1)[-1]}"],
                "resourceName": name,
                "versionName": version,
                "checkPermission": False,
                "canGenerate": True,
                "fileFormat": file_format,
                "hasMatureContentRestriction": False,
                "hasNSFWContentRestriction": False,
            }
    return None
