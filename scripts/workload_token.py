#!/usr/bin/env python3
"""A cluster's service account issuer in miniature, for the examples' CI run (scripts/conformance.sh):
makes a P-256 key, and writes into DIR its JWK set (jwks.json), a token shaped like a projected
service account token signed with it (token: iss, sub, aud, iat, nbf, exp, the kubernetes.io claim),
and an auth file (callers.yaml) whose one caller, billing-api, is known by that token's issuer,
audience and subject.

Usage: scripts/workload_token.py DIR   (PyJWT with its crypto extra: scripts/requirements-identities.txt)
"""

import json
import os
import sys
import time

import jwt
from cryptography.hazmat.primitives.asymmetric import ec

ISSUER = "https://kubernetes.default.svc.cluster.local"
SUBJECT = "system:serviceaccount:billing:billing-api"
KID = "cluster-key-1"


def main(directory):
    os.makedirs(directory, exist_ok=True)
    key = ec.generate_private_key(ec.SECP256R1())
    public = json.loads(jwt.algorithms.ECAlgorithm.to_jwk(key.public_key()))
    public.update({"kid": KID, "alg": "ES256", "use": "sig"})
    with open(os.path.join(directory, "jwks.json"), "w") as file:
        json.dump({"keys": [public]}, file)
    now = int(time.time())
    claims = {
        "iss": ISSUER, "sub": SUBJECT, "aud": ["connect-facade"],
        "iat": now, "nbf": now, "exp": now + 3600,
        "kubernetes.io": {"namespace": "billing", "serviceaccount": {"name": "billing-api"}},
    }
    token = jwt.encode(claims, key, algorithm="ES256", headers={"kid": KID})
    with open(os.path.join(directory, "token"), "w") as file:
        file.write(token + "\n")
    with open(os.path.join(directory, "callers.yaml"), "w") as file:
        file.write(
            f"issuers:\n  - issuer: {ISSUER}\n    jwks_file: jwks.json\n"
            "callers:\n  - name: billing-api\n"
            f"    jwt: {{issuer: {ISSUER}, audience: connect-facade, subject: \"{SUBJECT}\"}}\n"
            "    instances: [\"*\"]\n"
        )


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    main(sys.argv[1])
