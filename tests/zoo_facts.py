"""The MobileNet models tfhub.dev published, as ../shared/reference/ZOO.md states them.

Written out here from ZOO.md (sections 1-3), not read off specs/, so that
the tests of the variant tables compare the expansion against the facts.
"""

from hubexport import nets

#: depth multiplier -> (tfhub.dev's spelling in model names, the tarballs'
#: spelling, resolutions, feature size) for MobileNet V1 (ZOO.md: "1024 x DM").
V1 = {0.25: ("025", "0.25", (128, 160, 192, 224), 256),
      0.5: ("050", "0.5", (128, 160, 192, 224), 512),
      0.75: ("075", "0.75", (128, 160, 192, 224), 768),
      1.0: ("100", "1.0", (128, 160, 192, 224), 1024)}
#: The same for MobileNet V2 (ZOO.md: 1280 for DM <= 1, 1664 (1.3), 1792 (1.4)).
V2 = {0.35: ("035", "0.35", (96, 128, 160, 192, 224), 1280),
      0.5: ("050", "0.5", (96, 128, 160, 192, 224), 1280),
      0.75: ("075", "0.75", (96, 128, 160, 192, 224), 1280),
      1.0: ("100", "1.0", (96, 128, 160, 192, 224), 1280),
      1.3: ("130", "1.3", (224,), 1664),
      1.4: ("140", "1.4", (224,), 1792)}

V1_URL = "http://download.tensorflow.org/models/mobilenet_v1_2018_08_02/mobilenet_v1_%s_%d.tgz"
V2_URL = "https://storage.googleapis.com/mobilenet_v2/checkpoints/mobilenet_v2_%s_%d.tgz"

#: Published tarball sizes (bytes) and sha384 digests (ZOO.md section 2).
PUBLISHED = {
    "mobilenet_v1_100_224": (94321559, "20383a8a25a1f2dc0e9b72176a5cc93f662fd513be6e7153061045a635e88dbfe7e6b72880f60a1dfbec7cdd57f91641"),
    "mobilenet_v1_050_224": (29969407, "643989e61ae03d2e956a4bc222082534c44ac1bcce06450aafd5d30537dc5080fcf2f1d16a9ebbcbc613122e55759673"),
    "mobilenet_v1_050_160": (29958343, "7023a17e0f7dd48ffb3607ef1d7712702b1eb110d1a2c14f80bdf41b08148a07f9521a22250b5ef214b59a0bf62ef88b"),
    "mobilenet_v1_025_128": (10800019, "274f37d5b52f2291d78e438a9d780b19a8f379a1bb83d649c27780ce38e33365ca331405b06f103edc1852e214235169"),
    "mobilenet_v2_100_224": (78306834, "061da971be19c9fa185be494c7cd567ac8798bd14847f80c83afd9f4ffb2096343b4f5911fa227fe659c8d6684478822"),
    "mobilenet_v2_140_224": (135977516, "fd257f73e8ee5280328903afa6bbd646dcf4e8ae7c090e3424cf05d973c0940fe02ee220a3a5a20ea51cb9caacbf4961"),
}


def expected_models():
    """dict model name -> dict of the facts of each of the 38 MobileNets.

    Keys: family ("mobilenet_v1" / "mobilenet_v2"), depth_multiplier,
    resolution, architecture, url, member, card_path, feature_size,
    display_name.
    """
    models = {}
    for family, table, url in (("mobilenet_v1", V1, V1_URL), ("mobilenet_v2", V2, V2_URL)):
        for multiplier, (short, spelled, resolutions, features) in table.items():
            for resolution in resolutions:
                stem = "%s_%s_%d" % (family, spelled, resolution)
                card_path = "%s/%s.ckpt" % (stem, stem)
                if family == "mobilenet_v1":
                    card_path = "mobilenet_v1_2018_08_02/" + card_path
                models["%s_%s_%d" % (family, short, resolution)] = dict(
                    family=family, depth_multiplier=multiplier, resolution=resolution,
                    architecture="%s_%s" % (family, short), url=url % (spelled, resolution),
                    member=stem + ".ckpt", card_path=card_path, feature_size=features,
                    display_name="MobileNet %s (depth multiplier %.2f)"
                    % (family[-2:].upper(), multiplier))
    return models


#: The architecture names of the nets (hubexport.nets.ARCHITECTURES entries).
ARCHITECTURES = sorted({m["architecture"] for m in expected_models().values()})


def missing_architectures():
    """The MobileNet architectures hubexport.nets.ARCHITECTURES lacks (none once the nets are in)."""
    return [name for name in ARCHITECTURES if name not in nets.ARCHITECTURES]


#: Code a subprocess runs first so that the specs validate while the nets
#: are not in hubexport.nets yet (a no-op once they are).
ARCHITECTURES_PRELUDE = (
    "from hubexport import nets\n"
    "for _name in %r:\n"
    "    nets.ARCHITECTURES.setdefault(_name, _name[:12])\n" % (ARCHITECTURES,))
