"""What an attacker tries, one file per line of attack: the broker, one tenant hurting all,
requests that cost too much, values that are too lax, dead letters that fill the disk.
Each test attacks the way the attack was made, and fails on the code before its fix."""
