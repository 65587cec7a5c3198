#!/usr/bin/env python3
"""Test signer and independent verifier for edgepull's signed updates (real-registry tests).

Writes and checks cosign key-based signatures byte for byte in cosign's format, with
python3-cryptography only (no edgepull code):

  cosign.py keygen PRIV PUB
      a new ECDSA P-256 key pair (PKCS#8 PEM private key, SPKI PEM "PUBLIC KEY").
  cosign.py sign PRIV REFERENCE DIGEST OUTDIR
      OUTDIR/payload: the simple-signing payload for DIGEST naming REFERENCE, as cosign
      writes it; OUTDIR/signature: its base64 ASN.1 ECDSA-SHA256 signature.
  cosign.py layout OUTDIR TAG PAYLOAD SIGNATURE [PAYLOAD SIGNATURE ...]
      an OCI image layout holding the signature manifest under TAG: one layer of media
      type application/vnd.dev.cosign.simplesigning.v1+json per payload, its signature in
      the dev.cosignproject.cosign/signature annotation, and cosign's config blob.
  cosign.py verify IDENTITY KEYFILE,... DIGEST=LAYOUT ...
      the verdict on the signature layouts fetched for each candidate DIGEST (LAYOUT empty
      when the .sig tag does not exist): prints accepted, missing, invalid or mismatch.
"""

import base64
import hashlib
import json
import os
import sys

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

SIMPLESIGNING = "application/vnd.dev.cosign.simplesigning.v1+json"
ANNOTATION = "dev.cosignproject.cosign/signature"
COSIGN_TYPE = "cosign container image signature"


def keygen(priv, pub):
    key = ec.generate_private_key(ec.SECP256R1())
    with open(priv, "wb") as f:
        f.write(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                  serialization.NoEncryption()))
    with open(pub, "wb") as f:
        f.write(key.public_key().public_bytes(serialization.Encoding.PEM,
                                              serialization.PublicFormat.SubjectPublicKeyInfo))


def sign(priv, reference, digest, outdir):
    with open(priv, "rb") as f:
        key = serialization.load_pem_private_key(f.read(), password=None)
    # cosign's payload: Go's encoding/json of its struct, in this key order, no spaces.
    payload = json.dumps({
        "critical": {
            "identity": {"docker-reference": reference},
            "image": {"docker-manifest-digest": digest},
            "type": COSIGN_TYPE,
        },
        "optional": None,
    }, separators=(",", ":")).encode()
    signature = key.sign(payload, ec.ECDSA(hashes.SHA256()))
    os.makedirs(outdir, exist_ok=True)
    with open(os.path.join(outdir, "payload"), "wb") as f:
        f.write(payload)
    with open(os.path.join(outdir, "signature"), "w") as f:
        f.write(base64.b64encode(signature).decode())


def blob(layout, data):
    d = hashlib.sha256(data).hexdigest()
    with open(os.path.join(layout, "blobs", "sha256", d), "wb") as f:
        f.write(data)
    return "sha256:" + d


def layout(outdir, tag, pairs):
    os.makedirs(os.path.join(outdir, "blobs", "sha256"), exist_ok=True)
    with open(os.path.join(outdir, "oci-layout"), "w") as f:
        f.write('{"imageLayoutVersion":"1.0.0"}')
    layers = []
    for payload_file, sig_file in pairs:
        with open(payload_file, "rb") as f:
            payload = f.read()
        with open(sig_file) as f:
            signature = f.read().strip()
        layers.append({
            "mediaType": SIMPLESIGNING,
            "size": len(payload),
            "digest": blob(outdir, payload),
            "annotations": {ANNOTATION: signature},
        })
    config = json.dumps({
        "architecture": "", "created": "0001-01-01T00:00:00Z",
        "history": [{"created": "0001-01-01T00:00:00Z"}], "os": "",
        "rootfs": {"type": "layers", "diff_ids": [l["digest"] for l in layers]},
        "config": {},
    }, separators=(",", ":")).encode()
    manifest = json.dumps({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                   "size": len(config), "digest": blob(outdir, config)},
        "layers": layers,
    }, separators=(",", ":")).encode()
    index = {"schemaVersion": 2, "manifests": [{
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "size": len(manifest), "digest": blob(outdir, manifest),
        "annotations": {"org.opencontainers.image.ref.name": tag},
    }]}
    with open(os.path.join(outdir, "index.json"), "w") as f:
        json.dump(index, f)


def repository(reference):
    """registry/repository of a docker reference: a digest, then a tag, dropped; the host
    lower-cased and :443 dropped (what matchRepository compares after normalising)."""
    name = reference.split("@", 1)[0]
    slash = name.find("/")
    if slash < 0:
        return None
    last = name.rfind("/")
    colon = name.rfind(":")
    if colon > last:
        name = name[:colon]
    host, repo = name[:slash].lower(), name[slash + 1:]
    if host.endswith(":443"):
        host = host[:-4]
    return host + "/" + repo


RANK = {"missing": 0, "invalid": 1, "mismatch": 2}


def check_layout(identity, keys, digest, path):
    """The verdict on one candidate's signature layout."""
    if not path:
        return "missing"
    with open(os.path.join(path, "index.json")) as f:
        index = json.load(f)
    m = index["manifests"][0]["digest"].split(":", 1)[1]
    with open(os.path.join(path, "blobs", "sha256", m), "rb") as f:
        manifest = json.load(f)
    layers = [l for l in manifest.get("layers", []) if l.get("mediaType") == SIMPLESIGNING]
    if not layers:
        return "missing"
    if len(layers) > 16:
        return "invalid"
    worst = "missing"
    for l in layers:
        verdict = check_layer(identity, keys, digest, path, l)
        if verdict == "accepted":
            return verdict
        if RANK[verdict] > RANK[worst]:
            worst = verdict
    return worst


def check_layer(identity, keys, digest, path, layer):
    if layer["size"] > 64 * 1024:
        return "invalid"
    with open(os.path.join(path, "blobs", "sha256", layer["digest"].split(":", 1)[1]), "rb") as f:
        payload = f.read()
    if "sha256:" + hashlib.sha256(payload).hexdigest() != layer["digest"]:
        return "invalid"
    try:
        signature = base64.b64decode(layer.get("annotations", {})[ANNOTATION], validate=True)
    except (KeyError, ValueError):
        return "invalid"
    verified = False
    for key in keys:
        try:
            key.verify(signature, payload, ec.ECDSA(hashes.SHA256()))
            verified = True
            break
        except InvalidSignature:
            pass
    if not verified:
        return "invalid"
    try:
        critical = json.loads(payload)["critical"]
        kind = critical["type"]
        signed_digest = critical["image"]["docker-manifest-digest"]
        reference = critical["identity"]["docker-reference"]
    except (ValueError, KeyError, TypeError):
        return "invalid"
    if kind != COSIGN_TYPE:
        return "invalid"
    if signed_digest != digest or repository(reference) != repository(identity):
        return "mismatch"
    return "accepted"


def verify(identity, keyfiles, candidates):
    keys = []
    for k in keyfiles.split(","):
        with open(k, "rb") as f:
            keys.append(serialization.load_pem_public_key(f.read()))
    worst = "missing"
    for c in candidates:
        digest, path = c.split("=", 1)
        verdict = check_layout(identity, keys, digest, path)
        if verdict == "accepted":
            print("accepted")
            return
        if RANK[verdict] > RANK[worst]:
            worst = verdict
    print(worst)


def main(argv):
    cmd, args = argv[1], argv[2:]
    if cmd == "keygen":
        keygen(*args)
    elif cmd == "sign":
        sign(*args)
    elif cmd == "layout":
        layout(args[0], args[1], list(zip(args[2::2], args[3::2])))
    elif cmd == "verify":
        verify(args[0], args[1], args[2:])
    else:
        sys.exit("unknown command " + cmd)


if __name__ == "__main__":
    main(sys.argv)
