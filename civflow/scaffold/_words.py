"""The short words an editor shows on hover: civflow's own, never the OpenAPI document's prose.

A field without words here still gets its facts (type, allowed values, range, default),
written by `editor.facts`.
"""

from __future__ import annotations

FIELD_WORDS: dict[str, str] = {
    # Discriminators: they pick which set of fields applies.
    "engine": "Which backend runs the step; selects the fields that apply.",
    "ecosystem": "The model family (sdxl, sd1, flux1, …); selects the fields that apply.",
    "operation": "What the engine does (createImage, createVariant, editImage, …).",
    "version": "The engine version; selects the fields that apply.",
    "provider": "Who hosts the engine; selects the fields that apply.",
    # Prompts and seeds.
    "prompt": "What to generate.",
    "negativePrompt": "What to keep out of the result.",
    "seed": "Fixes the random start; civflow derives one per instance when omitted.",
    "instruction": "How to rewrite the prompt.",
    "text": "The text to use.",
    "messages": "The conversation, oldest message first.",
    "temperature": "Randomness of the answer: lower is more predictable.",
    "topP": "Nucleus sampling: only the most likely tokens up to this mass.",
    "maxTokens": "The longest answer, in tokens.",
    # Models and resources.
    "model": "The model: an AIR (urn:air:…) for checkpoints, else the engine's model name.",
    "vaeModel": "A VAE, as an AIR.",
    "diffuserModel": "The diffusion model, as an AIR.",
    "diffusionModel": "The diffusion model, as an AIR.",
    "clipLModel": "The CLIP-L text encoder, as an AIR.",
    "t5XXLModel": "The T5-XXL text encoder, as an AIR.",
    "checkpointModel": "The checkpoint, as an AIR.",
    "loras": "LoRAs to apply, each with its strength.",
    "additionalNetworks": "LoRAs and embeddings, keyed by AIR, with their strengths.",
    "embeddings": "Textual-inversion embeddings, as AIRs.",
    "controlNets": "ControlNet guides.",
    # Sampling.
    "steps": "Sampling steps: more is slower and usually finer.",
    "cfgScale": "How closely to follow the prompt.",
    "guidanceScale": "How closely to follow the prompt.",
    "sampler": "The sampler (ComfyUI names).",
    "scheduler": "The noise schedule.",
    "sampleMethod": "The sampler (stable-diffusion.cpp names).",
    "schedule": "The noise schedule (stable-diffusion.cpp names).",
    "clipSkip": "How many final CLIP layers to skip.",
    "strength": "How far to move away from the source image: 0 keeps it, 1 ignores it.",
    "denoiseStrength": "How far to move away from the source image: 0 keeps it, 1 ignores it.",
    "shift": "Timestep shift of the sampler.",
    # Size and count.
    "width": "Width in pixels.",
    "height": "Height in pixels.",
    "aspectRatio": "The shape of the result.",
    "resolution": "The output resolution.",
    "size": "The output size.",
    "quantity": "How many results one workflow returns; each is billed.",
    "numImages": "How many images to return; each is billed.",
    "batchSize": "How many images are made at once.",
    "quality": "The quality tier, or the encoder quality.",
    # Media in and out.
    "image": "A source image: an https URL, a data URL, or an upstream output such as "
             "\"{{ steps.hero.output.images[0].url }}\".",
    "images": "Source images: https URLs, data URLs or upstream outputs.",
    "sourceImage": "A source image: an https URL, a data URL or an upstream output.",
    "sourceVideo": "A source video: an https URL or an upstream output.",
    "video": "A source video: an https URL or an upstream output.",
    "videoUrl": "A source video's https URL.",
    "imageUrl": "A source image's https URL.",
    "mediaUrl": "The image or video to work on, as an https URL or an upstream output.",
    "audioUrl": "An audio track's https URL.",
    "firstFrame": "The image the video starts from.",
    "lastFrame": "The image the video ends on.",
    "endImage": "The image the video ends on.",
    "outputFormat": "The file format of the results.",
    "format": "The file format of the result.",
    "imageMetadata": "Metadata embedded in the result files.",
    "output": "How the result is encoded.",
    "transforms": "Transforms applied in order before encoding.",
    # Video.
    "duration": "Length of the video in seconds.",
    "frameRate": "Frames per second.",
    "fps": "Frames per second.",
    "numFrames": "Number of frames.",
    "enablePromptExpansion": "Let the engine expand the prompt before generating.",
    "enableSafetyChecker": "Run the engine's safety checker on the result.",
    "generateAudio": "Generate a sound track too.",
    "multiShots": "Let the engine cut between several shots.",
    "cameraControl": "Camera movement.",
    "mode": "The engine's speed and quality tier.",
    # Other step types.
    "numberOfRepeats": "How many times the upscaler runs over its own result.",
    "threshold": "The least confidence for a tag to be returned.",
    "message": "The text echoed back.",
    "comfyWorkflow": "A ComfyUI graph in API format: node id to node.",
    "trainingData": "The images to train on.",
    "triggerWord": "The word that calls up the trained concept.",
    "epochs": "How many passes over the training data.",
}

# Words of the civflow-only keys of a `comfy` step written with a workflow file.
COMFY_WORKFLOW = ("A ComfyUI workflow exported with 'Save (API format)', as a path relative "
                  "to the pipeline file (never outside its folder).")
COMFY_SET = ("Node inputs to set, by the node title shown in ComfyUI: "
             "{\"Positive prompt\": {text: …}}.")

TEMPLATE = ("A Jinja template, rendered when the step runs: \"{{ vars_or_steps }}\". A value "
            "that is exactly one {{ expression }} keeps the expression's type.")
