"""Prepare the training corpus: English documentation from Debian packages, reduced to byte tokens.

    python examples/train/prepare_data.py            # downloads the packages (apt-get download) unless installed
    python examples/train/prepare_data.py --verify   # checks existing files against manifest and expected sums

Sources: the Linux kernel's documentation (linux-doc-6.1) and Python's (python3.11-doc), as the HTML that
Sphinx built, reduced to the article text (html_text.py). Each page is a document; a document goes to the
validation split when the SHA-256 of its name ("package/relative/path.html") falls in the first 5 % of the
hash range, so the split does not depend on the order files are found or on which other pages exist.
Tokens are the UTF-8 bytes (ids 0-255, uint8); documents are separated by one NUL byte (id 0, absent from
the text). Output (git-ignored): DIR/train.bin, DIR/val.bin, DIR/manifest.json (sizes, SHA-256, package
versions). The expected sums for the recorded package versions are in data_expected.json next to this file.
"""

import argparse
import hashlib
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

from html_text import html_to_text

HERE = Path(__file__).resolve().parent
DEFAULT_DIR = HERE / "data"
EXPECTED = HERE / "data_expected.json"
FORMAT = 1  # bump when the extraction or the file layout changes (the expected sums change with it)
VAL_FRACTION = 0.05
MAX_BYTES = 40 * 2**20  # the prepared files travel with the working tree
SEP = b"\x00"

# (package, HTML root under the filesystem root, page paths to leave out: indexes, tables of contents,
# non-English translations, generated listings that are not prose: MAINTAINERS, the ABI dump)
SOURCES = [
    ("linux-doc-6.1", "usr/share/doc/linux-doc-6.1/html",
     ("translations/", "genindex", "search.html", "process/maintainers.html", "admin-guide/abi-")),
    ("python3.11-doc", "usr/share/doc/python3.11/html",
     ("genindex", "search.html", "py-modindex.html", "contents.html")),
]


def installed_version(pkg):
    r = subprocess.run(["dpkg-query", "-W", "-f=${Status}\t${Version}", pkg], capture_output=True, text=True)
    status, _, version = r.stdout.partition("\t")
    return version if r.returncode == 0 and status.endswith("ok installed") else None


def unpack(pkg, cache):
    """Downloads pkg's .deb with apt-get and unpacks it under cache/root; returns (version, filesystem root).

    Unpacking instead of installing needs no root and changes nothing on the system (installing could
    also upgrade packages of the same source, such as the Python interpreter)."""
    cache.mkdir(parents=True, exist_ok=True)
    debs = sorted(cache.glob(f"{pkg}_*.deb"))
    if not debs:
        print(f"prepare_data: downloading {pkg} (apt-get download)", flush=True)
        subprocess.run(["apt-get", "download", pkg], cwd=cache, check=True)
        debs = sorted(cache.glob(f"{pkg}_*.deb"))
    if len(debs) != 1:
        sys.exit(f"prepare_data: expected one {pkg} .deb in {cache}, found {len(debs)}; remove the stale ones")
    version = subprocess.run(["dpkg-deb", "-f", str(debs[0]), "Version"], capture_output=True, text=True,
                             check=True).stdout.strip()
    root = cache / "root"
    stamp = root / f".{pkg}_{version}"
    if not stamp.exists():
        subprocess.run(["dpkg-deb", "-x", str(debs[0]), str(root)], check=True)
        stamp.touch()
    return version, root


def locate(pkg, cache):
    """(version, filesystem root) of pkg: the installed package if there is one, else an unpacked .deb."""
    version = installed_version(pkg)
    return (version, Path("/")) if version else unpack(pkg, cache)


def pages(root, skip):
    """Relative paths of the HTML pages under root, sorted (byte order) for a reproducible stream."""
    out = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = [d for d in dirnames if not d.startswith("_")]  # _sources, _static, _images, ...
        for fn in filenames:
            if fn.endswith(".html"):
                rel = os.path.relpath(os.path.join(dirpath, fn), root).replace(os.sep, "/")
                if not any(rel.startswith(s) or fn.startswith(s) for s in skip):
                    out.append(rel)
    return sorted(out, key=lambda s: s.encode())


def is_val(name):
    h = int.from_bytes(hashlib.sha256(name.encode()).digest()[:8], "big")
    return h < VAL_FRACTION * 2**64


def sha256(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def build(out_dir, cache):
    out_dir.mkdir(parents=True, exist_ok=True)
    split = {"train": [], "val": []}
    docs = {"train": 0, "val": 0}
    packages = []
    for pkg, rel_root, skip in SOURCES:
        version, fs_root = locate(pkg, cache)
        root = fs_root / rel_root
        if not root.is_dir():
            sys.exit(f"prepare_data: {root} is missing (package {pkg} {version} has no HTML there)")
        n_pages = n_bytes = 0
        for rel in pages(root, skip):
            text = html_to_text((root / rel).read_text(encoding="utf-8", errors="replace"))
            if not text:
                continue
            data = text.encode("utf-8")
            part = "val" if is_val(f"{pkg}/{rel}") else "train"
            split[part].append(data)
            docs[part] += 1
            n_pages += 1
            n_bytes += len(data)
        packages.append({"name": pkg, "version": version, "documents": n_pages, "text_bytes": n_bytes})
        print(f"prepare_data: {pkg} {version}: {n_pages} documents, {n_bytes / 1e6:.1f} MB of text", flush=True)
    files = {}
    for part, chunks in split.items():
        path = out_dir / f"{part}.bin"
        blob = SEP.join(chunks) + SEP
        path.write_bytes(blob)
        files[f"{part}.bin"] = {"bytes": len(blob), "documents": docs[part], "sha256": sha256(path)}
    total = sum(f["bytes"] for f in files.values())
    if total > MAX_BYTES:
        sys.exit(f"prepare_data: {total} bytes exceed the {MAX_BYTES}-byte limit; drop a source")
    manifest = {"format": FORMAT, "tokens": "utf-8 bytes, uint8; documents separated by byte 0",
                "split": f"sha256('package/path') < {VAL_FRACTION} of the hash range -> val",
                "packages": packages, "files": files}
    (out_dir / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
    return manifest


def check(out_dir, strict):
    """Compares DIR's files with their manifest (corruption) and with data_expected.json (reproduction).

    Returns 0 when everything matches, 1 on a checksum mismatch for the recorded package versions or a
    corrupt file, 0 with a warning when the package versions differ from the recorded ones (then the sums
    are expected to differ: the data is usable, but runs are not comparable with the recorded ones).
    """
    mpath = out_dir / "manifest.json"
    if not mpath.exists():
        print(f"prepare_data: {mpath} is missing; run examples/train/prepare_data.py", file=sys.stderr)
        return 1
    manifest = json.loads(mpath.read_text())
    bad = 0
    for name, info in manifest["files"].items():
        path = out_dir / name
        got = sha256(path) if path.exists() else "missing"
        if got != info["sha256"]:
            print(f"prepare_data: {path} is corrupt: sha256 {got}, manifest says {info['sha256']}", file=sys.stderr)
            bad = 1
    expected = json.loads(EXPECTED.read_text())
    have = {p["name"]: p["version"] for p in manifest["packages"]}
    want = {p["name"]: p["version"] for p in expected["packages"]}
    if have != want or manifest["format"] != expected["format"]:
        diff = ", ".join(f"{k}: recorded {want.get(k)}, here {have.get(k)}" for k in sorted(set(have) | set(want))
                         if have.get(k) != want.get(k)) or f"format {expected['format']} vs {manifest['format']}"
        print(f"prepare_data: WARNING: the inputs differ from the recorded ones ({diff}); the checksums in "
              f"{EXPECTED.name} do not apply and results are not comparable with runs on the recorded data",
              file=sys.stderr)
        return 1 if strict else bad
    for name, info in expected["files"].items():
        got = manifest["files"].get(name, {})
        if got.get("sha256") != info["sha256"] or got.get("bytes") != info["bytes"]:
            print(f"prepare_data: MISMATCH: {name} has {got.get('bytes')} bytes, sha256 {got.get('sha256')}; "
                  f"expected {info['bytes']} bytes, sha256 {info['sha256']} for the same package versions "
                  f"(the extraction is not reproducible here: report it)", file=sys.stderr)
            bad = 1
    if not bad:
        print(f"prepare_data: {out_dir}: checksums match {EXPECTED.name}")
    return bad


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", type=Path, default=DEFAULT_DIR, help=f"output directory (default {DEFAULT_DIR})")
    ap.add_argument("--verify", action="store_true", help="only check existing files")
    ap.add_argument("--strict", action="store_true", help="fail (exit 1) when package versions differ")
    ap.add_argument("--cache", type=Path, default=None,
                    help="keep the downloaded and unpacked packages here (default: a temporary directory)")
    ap.add_argument("--record", action="store_true", help=f"write the resulting sums to {EXPECTED.name}")
    a = ap.parse_args(argv)
    if not a.verify:
        if a.cache is None:  # the output directory stays small: it travels to the GPU machine
            with tempfile.TemporaryDirectory(prefix="splat-corpus-") as tmp:
                m = build(a.out, Path(tmp))
        else:
            m = build(a.out, a.cache)
        for name, info in m["files"].items():
            print(f"prepare_data: {a.out / name}: {info['bytes']} bytes, {info['documents']} documents, "
                  f"sha256 {info['sha256']}")
        if a.record:
            rec = {"format": m["format"], "packages": [{"name": p["name"], "version": p["version"]}
                                                       for p in m["packages"]],
                   "files": {k: {"bytes": v["bytes"], "sha256": v["sha256"]} for k, v in m["files"].items()}}
            EXPECTED.write_text(json.dumps(rec, indent=2) + "\n")
            print(f"prepare_data: recorded {EXPECTED}")
    return check(a.out, a.strict)


if __name__ == "__main__":
    sys.exit(main())
