"""What every command's help ends with: examples, then the exit codes."""

EXIT_CODES = """\b
Exit codes:
  0  success
  1  error: bad input path, refused overwrite, model not bundled,
     --device cuda without a GPU, a terminal as binary output
  2  usage error (unknown option, bad value)
  3  archive corrupt, truncated, foreign or from a newer bbans
  4  archive cannot be reproduced here (other model weights,
     no GPU for a GPU-made archive) or a checksum failed
  130 interrupted (SIGINT), 143 terminated (SIGTERM); nothing
      half-written is left behind"""


def epilog(examples: str) -> str:
    return f"{examples}\n\n{EXIT_CODES}"
