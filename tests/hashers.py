"""The password hasher of the test process (tests/conftest.py)."""

from __future__ import annotations

from django.contrib.auth.hashers import PBKDF2PasswordHasher


class QuickPBKDF2PasswordHasher(PBKDF2PasswordHasher):
    """Production's algorithm (pbkdf2_sha256) with 1,000 iterations instead of 1,000,000: the
    personas' passwords are hashed in almost every inbox and studio test, at about a second
    each on a busy machine. A hash it makes still verifies in the servers the tests start,
    which read the iteration count from the hash itself."""

    iterations = 1_000
