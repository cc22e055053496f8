"""The static-file tests' directory tree: the files, dotfiles and symlinks
the tests need, and the bytes the tests compare.

The tree (under a temporary BASE):

    BASE/secret.txt                  outside every root; holds SECRET
    BASE/root/                       served at /static
        real.css, alias.css -> real.css
        app.3f2a1b4c5d6e.css (hashed), app.3f2a1b4c5d6.css (11 digits: not)
        x.css, x.css.br, x.css.gz    a file with precompressed siblings
        page.html, notes.txt, data.json, icon.svg, script.js, pixel.png
        range.txt                    known bytes for Range requests
        big.bin                      1 GiB, sparse (all zero bytes)
        leak -> ../secret.txt        symlink to a file outside the root
        escape -> ..                 symlink to a directory outside the root
        .env, .git/config            dotfiles (hold SECRET)
        sub/inside.txt, sub/.hidden  a subdirectory and a dotfile in it
        special/only.txt             shadowed by the /static/special mount
    BASE/special/only.txt            served at /static/special
    BASE/media/photo.png             served at /media
"""

import gzip
import os
from dataclasses import dataclass, field
from pathlib import Path

# Must never appear in any response body.
SECRET = "SECRET-MARKER-5d41402abc4b2a76"

# The smallest valid PNG: 1x1 pixel, greyscale.
PIXEL_PNG = bytes.fromhex(
    "89504e470d0a1a0a0000000d4948445200000001000000010800000000"
    "3a7e9b550000000a4944415478da63600000000200015de2f5bf0000000049454e44ae426082"
)

BIG_SIZE = 1 << 30

# Bodies the tests compare byte for byte.
REAL_CSS = b"body { color: rgb(1, 2, 3); }\n"
X_CSS = b"/* plain */ .x { margin: 0; }\n" * 40
X_CSS_BR = b"BROTLI-SIBLING-BYTES\x00\x01\x02" + b"\xff" * 50  # served as is; never decoded here
RANGE_TXT = bytes(range(32, 127)) * 3  # 285 printable bytes


@dataclass
class StaticTree:
    base: Path
    root: Path
    special: Path
    media: Path
    files: dict = field(default_factory=dict)  # name under root -> bytes

    def static_args(self):
        """CLI arguments mounting the three roots; the shorter prefix is given
        first so that only a longest-prefix rule (not first-match) picks
        /static/special."""
        return [
            "--static",
            f"/static={self.root}",
            "--static",
            f"/static/special={self.special}",
            "--static",
            f"/media={self.media}",
        ]


def build_tree(base: Path) -> StaticTree:
    base = Path(base)
    root = base / "root"
    special = base / "special"
    media = base / "media"
    for d in (root, root / "sub", root / ".git", root / "special", special, media):
        d.mkdir(parents=True, exist_ok=True)

    (base / "secret.txt").write_text(SECRET + "\n")

    files = {
        "real.css": REAL_CSS,
        "app.3f2a1b4c5d6e.css": b".hashed { color: blue; }\n",
        "app.3f2a1b4c5d6.css": b".eleven { color: blue; }\n",
        "x.css": X_CSS,
        "x.css.br": X_CSS_BR,
        "x.css.gz": gzip.compress(X_CSS, mtime=0),
        "page.html": b"<!doctype html><title>t</title><p>page</p>\n",
        "notes.txt": b"plain text notes\n",
        "data.json": b'{"k": "v"}\n',
        "icon.svg": b'<svg xmlns="http://www.w3.org/2000/svg" width="1" height="1"/>\n',
        "script.js": b"window.loaded = true;\n",
        "pixel.png": PIXEL_PNG,
        "range.txt": RANGE_TXT,
        "sub/inside.txt": b"inside the subdirectory\n",
        "special/only.txt": b"from the /static root\n",
    }
    for name, data in files.items():
        (root / name).write_bytes(data)
    for dotfile in (".env", ".git/config", "sub/.hidden"):
        (root / dotfile).write_text(f"{SECRET}\n")
    (special / "only.txt").write_bytes(b"from the /static/special mount\n")
    (media / "photo.png").write_bytes(PIXEL_PNG)

    os.symlink("real.css", root / "alias.css")
    os.symlink("../secret.txt", root / "leak")
    os.symlink("..", root / "escape")

    with open(root / "big.bin", "wb") as f:
        f.truncate(BIG_SIZE)

    return StaticTree(base=base, root=root, special=special, media=media, files=files)
