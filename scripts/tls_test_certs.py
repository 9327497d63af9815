#!/usr/bin/env python3
"""Test certificates for running neon-auth over TLS against the fake NeonCRM (loopback only).

Uses the `openssl` command-line tool (OpenSSL 1.1.1 or later). Everything is made afresh in
DIRECTORY, with EC P-256 keys (fast); nothing here is ever trusted outside the tests.

Usage: scripts/tls_test_certs.py DIRECTORY    (prints one JSON object: name -> paths)

In-process: ``from tls_test_certs import make_certs; certs = make_certs(path)``.

What is made (each leaf has its certificate NAME.pem and key NAME.key):

    ca.pem          the test CA ("neon-auth test CA"): what --ca-file / SSL_CERT_FILE point at
    ca-dir/         an OpenSSL hashed directory (HASH.0) holding ca.pem: what SSL_CERT_DIR points at
    other-ca.pem    a second CA nobody is told to trust
    good            signed by the CA, for 127.0.0.1 and localhost, valid now
    untrusted       signed by the other CA, for 127.0.0.1 and localhost
    self-signed     a self-signed leaf for 127.0.0.1 and localhost
    wrong-host      signed by the CA, for wrong-host.invalid only
    expired         signed by the CA, for 127.0.0.1 and localhost, valid in January 2020 only
    not-yet-valid   signed by the CA, for 127.0.0.1 and localhost, valid from 2099 on
"""

from __future__ import annotations

import json
import pathlib
import shutil
import subprocess
import sys

LOOPBACK_NAMES = "IP:127.0.0.1,DNS:localhost"

# name -> (issuer: "ca", "other-ca" or "self", subjectAltName, start date, end date); dates
# as openssl ca takes them (YYYYMMDDHHMMSSZ), None for "from now, for 30 days".
LEAVES = {
    "good": ("ca", LOOPBACK_NAMES, None, None),
    "untrusted": ("other-ca", LOOPBACK_NAMES, None, None),
    "self-signed": ("self", LOOPBACK_NAMES, None, None),
    "wrong-host": ("ca", "DNS:wrong-host.invalid", None, None),
    "expired": ("ca", LOOPBACK_NAMES, "20200101000000Z", "20200131000000Z"),
    "not-yet-valid": ("ca", LOOPBACK_NAMES, "20990101000000Z", "20991231000000Z"),
}

CA_CONFIG = """\
[ca]
default_ca = test_ca
[test_ca]
dir = {dir}
database = $dir/index.txt
new_certs_dir = $dir/issued
serial = $dir/serial
default_md = sha256
policy = anything
unique_subject = no
copy_extensions = copy
default_days = 30
[anything]
commonName = supplied
[leaf]
basicConstraints = critical,CA:FALSE
keyUsage = critical,digitalSignature
extendedKeyUsage = serverAuth
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid
"""


def _openssl(*args: str, cwd: pathlib.Path) -> None:
    done = subprocess.run(["openssl", *args], cwd=cwd, stdin=subprocess.DEVNULL,
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"openssl {args[0]} failed: {done.stderr.strip()[:2000]}")


def _key(path: pathlib.Path, cwd: pathlib.Path) -> None:
    _openssl("genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256", "-out", str(path), cwd=cwd)


def _make_ca(name: str, common_name: str, out: pathlib.Path) -> pathlib.Path:
    """A CA key and self-signed CA certificate, with its `openssl ca` working directory."""
    work = out / (name + ".d")
    (work / "issued").mkdir(parents=True)
    (work / "index.txt").write_text("")
    (work / "serial").write_text("1000\n")
    (work / "ca.cnf").write_text(CA_CONFIG.format(dir=work))
    _key(out / (name + ".key"), out)
    _openssl("req", "-x509", "-new", "-key", str(out / (name + ".key")), "-out", str(out / (name + ".pem")),
             "-days", "3650", "-subj", f"/CN={common_name}",
             "-addext", "basicConstraints=critical,CA:TRUE", "-addext", "keyUsage=critical,keyCertSign,cRLSign",
             cwd=out)
    return work


def make_certs(directory: str | pathlib.Path) -> dict[str, str]:
    """Makes every certificate in `directory` (created if needed).

    Returns a dict: "ca" and "other-ca" -> CA certificate paths, "ca-dir" -> the hashed
    directory, and for each leaf NAME, NAME + ".cert" and NAME + ".key" -> paths.
    """
    if shutil.which("openssl") is None:
        raise RuntimeError("the openssl command-line tool is required (Debian: apt-get install openssl)")
    out = pathlib.Path(directory).resolve()
    out.mkdir(parents=True, exist_ok=True)
    works = {"ca": _make_ca("ca", "neon-auth test CA", out),
             "other-ca": _make_ca("other-ca", "neon-auth untrusted test CA", out)}
    result = {"ca": str(out / "ca.pem"), "other-ca": str(out / "other-ca.pem"), "ca-dir": str(out / "ca-dir")}
    hashed = subprocess.run(["openssl", "x509", "-hash", "-noout", "-in", str(out / "ca.pem")], cwd=out,
                            stdin=subprocess.DEVNULL, capture_output=True, text=True, check=True).stdout.strip()
    (out / "ca-dir").mkdir(exist_ok=True)
    shutil.copyfile(out / "ca.pem", out / "ca-dir" / (hashed + ".0"))
    for name, (issuer, names, start, end) in LEAVES.items():
        key, cert, csr = out / (name + ".key"), out / (name + ".pem"), out / (name + ".csr")
        _key(key, out)
        subject = f"/CN={names.split(',')[0].split(':', 1)[1]}"
        if issuer == "self":
            _openssl("req", "-x509", "-new", "-key", str(key), "-out", str(cert), "-days", "30", "-subj", subject,
                     "-addext", f"subjectAltName={names}", "-addext", "basicConstraints=critical,CA:FALSE",
                     "-addext", "extendedKeyUsage=serverAuth", cwd=out)
        else:
            _openssl("req", "-new", "-key", str(key), "-out", str(csr), "-subj", subject,
                     "-addext", f"subjectAltName={names}", cwd=out)
            work = works[issuer]
            dates = ["-startdate", start, "-enddate", end] if start else ["-days", "30"]
            _openssl("ca", "-batch", "-notext", "-config", str(work / "ca.cnf"), "-extensions", "leaf",
                     "-cert", str(out / (issuer + ".pem")), "-keyfile", str(out / (issuer + ".key")),
                     "-in", str(csr), "-out", str(cert), *dates, cwd=out)
            csr.unlink()
        result[name + ".cert"] = str(cert)
        result[name + ".key"] = str(key)
    return result


def main(argv: list[str]) -> int:
    if len(argv) != 1 or argv[0].startswith("-"):
        sys.stderr.write(__doc__.split("\n\n")[2] + "\n")
        return 2
    try:
        certs = make_certs(argv[0])
    except (RuntimeError, OSError) as exc:
        sys.stderr.write(f"tls_test_certs: {exc}\n")
        return 1
    sys.stdout.write(json.dumps(certs) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
