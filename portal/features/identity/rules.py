"""Password policy (ASVS 2.1): length only, no composition rules, and no well-known passwords."""

from __future__ import annotations

MIN_LENGTH = 12
MAX_LENGTH = 128

# The most common passwords of at least MIN_LENGTH characters in public breach corpora.
COMMON = frozenset(
    {
        "123456789012",
        "1234567890123",
        "12345678910",
        "qwertyuiopas",
        "password1234",
        "password12345",
        "passwordpassword",
        "qwerty123456",
        "111111111111",
        "000000000000",
        "iloveyou1234",
        "administrator",
        "welcome12345",
        "letmein12345",
        "changeme1234",
        "abc123456789",
        "qwertyuiop123",
        "1q2w3e4r5t6y",
        "q1w2e3r4t5y6",
        "123123123123",
        "superman1234",
        "football1234",
        "baseball1234",
        "aaaaaaaaaaaa",
        "passw0rd1234",
    }
)


class PasswordProblem:
    TOO_SHORT = "too_short"
    TOO_LONG = "too_long"
    TOO_COMMON = "too_common"
    CONTAINS_EMAIL = "contains_email"


def password_problems(password: str, email: str = "") -> list[str]:
    problems: list[str] = []
    if len(password) < MIN_LENGTH:
        problems.append(PasswordProblem.TOO_SHORT)
    if len(password) > MAX_LENGTH:
        problems.append(PasswordProblem.TOO_LONG)
    if password.lower() in COMMON:
        problems.append(PasswordProblem.TOO_COMMON)
    local_part = email.split("@", 1)[0].lower()
    if len(local_part) >= 4 and local_part in password.lower():
        problems.append(PasswordProblem.CONTAINS_EMAIL)
    return problems
