#!/usr/bin/env python3
"""Make sure the local `demo` login exists and print "demo\\n<password>".

Usage: python scripts/ensure_login.py var/demo-login.txt

The password is generated once and kept in the given file (mode 600); later calls print the same
one. If the user is missing (a new database) it is created with that password; if its password
no longer matches the file, it is set back to the file's. The user is staff and superuser: this is
the local login of `make run`, which also opens the admin.
"""

from __future__ import annotations

import os
import secrets
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
USERNAME = "demo"


def read_or_create_password(path: Path) -> str:
    if path.is_file():
        lines = path.read_text().splitlines()
        if len(lines) >= 2 and lines[0] == USERNAME and lines[1]:
            return lines[1]
    password = secrets.token_urlsafe(12)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(f"{USERNAME}\n{password}\n")
    return password


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        print(__doc__, file=sys.stderr)
        return 2
    password = read_or_create_password(Path(argv[1]))
    sys.path.insert(0, str(ROOT))
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "webapp.settings")
    import django

    django.setup()
    from django.contrib.auth import get_user_model

    User = get_user_model()
    user, created = User.objects.get_or_create(username=USERNAME, defaults={"is_staff": True, "is_superuser": True})
    if created or not user.check_password(password):
        user.set_password(password)
        user.is_staff = user.is_superuser = user.is_active = True
        user.save()
    print(f"{USERNAME}\n{password}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
