"""oras-py as a contender: `Registry.pull` of one reference into a directory.

    VENV_PYTHON scripts/bench.d/oras_pull.py LOGIN_HOST REF DEST USER PASSWORD_FILE CA_FILE

Run with the virtualenv's python that scripts/bench installs oras into (pinned version).
oras-py fetches the manifest and then each layer in turn, following the login server's
redirect to the data endpoint (requests drops the Authorization header on the new host).
It neither checks digests nor syncs what it writes, and skips the config blob: what the
table calls "no verify".
"""

import sys

import oras.provider


def main():
    host, ref, dest, user, password_file, ca = sys.argv[1:7]
    with open(password_file) as f:
        password = f.read().strip()
    reg = oras.provider.Registry(hostname=host, tls_verify=ca, auth_backend="token")
    reg.auth.set_basic_auth(user, password)
    files = reg.pull(target=ref, outdir=dest)
    if not files:
        sys.exit(f"oras-py pulled no files for {ref}")


if __name__ == "__main__":
    main()
