"""The words the sandbox catalog makes its prompts, negative prompts, user names and slugs from.

Subjects are grouped so that the demo words "portrait", "landscape" and "cat" each match a
sizeable share of prompts.  Words were picked so that none of those three is a substring of an
unrelated word (no "intricate", "delicate", "scattered" ...), because search is substring based.
"""

from __future__ import annotations

PORTRAITS = (
    "portrait of a young woman with freckles",
    "portrait of an old fisherman",
    "portrait of a knight in silver armor",
    "portrait of a cyberpunk hacker",
    "close-up portrait of a smiling child",
    "portrait of a wizard with a long beard",
    "portrait of a café waitress in Paris",
    "portrait of a samurai, 侍",
)
LANDSCAPES = (
    "landscape with snowy mountains and a lake",
    "misty forest landscape at dawn",
    "desert landscape with dunes under a full moon",
    "alien landscape with two suns",
    "landscape of rolling hills and a windmill",
    "volcanic landscape, rivers of lava",
    "landscape of Tokyo at night, 東京",
)
CATS = (
    "a fluffy cat sleeping on a windowsill",
    "cat wearing a tiny wizard hat",
    "black cat on a rooftop under the stars",
    "cat astronaut floating in space",
    "ginger cat in a field of sunflowers",
)
OTHERS = (
    "a lighthouse on a stormy coast",
    "steampunk airship above a city",
    "a bowl of ramen, food photography",
    "ancient temple overgrown with vines",
    "a red fox in the snow",
    "isometric diorama of a tiny island",
    "robot gardener watering flowers",
    "underwater city with glowing jellyfish",
    "vintage car on Route 66",
)
STYLES = (
    "oil painting",
    "watercolor",
    "digital art",
    "photorealistic",
    "35mm film photo",
    "anime style",
    "concept art",
    "ukiyo-e",
    "pixel art",
    "art nouveau",
)
MODIFIERS = (
    "highly detailed",
    "sharp focus",
    "golden hour",
    "dramatic lighting",
    "soft light",
    "volumetric fog",
    "trending on artstation",
    "8k",
    "bokeh",
    "vibrant colors",
    "muted tones",
    "by Greg Rutkowski",
    "cinematic",
    "wide angle",
)
WEIGHTED = ("(masterpiece:1.2)", "(best quality)", "((ultra detailed))", "[blurry]", "(film grain:0.8)")
NEGATIVES = (
    "lowres, bad anatomy, bad hands, text, error, missing fingers",
    "blurry, watermark, signature",
    "(worst quality:1.4), (low quality:1.4), jpeg artifacts",
    "deformed, ugly, extra limbs",
    "nsfw, nude",
    "cartoon, 3d, (disfigured), (bad art)",
)
USERS = (
    "pixelpilgrim",
    "neonmoth",
    "latentlola",
    "dreamforge",
    "mossy_owl",
    "Ana_Ñúñez",
    "kappa77",
    "quietfox",
)
SLUG_WORDS = ("amber", "misty", "quiet", "silver", "hollow", "velvet", "ember", "lunar", "cobalt", "wild")
SLUG_NOUNS = ("harbor", "meadow", "lantern", "summit", "orchard", "comet", "grove", "tide", "atlas", "reef")
