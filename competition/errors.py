"""The one exception type users see: a problem with their input, said plainly."""


class CompetitionError(Exception):
    """A user-facing error: names the file or row at fault and what to do.

    The CLI prints it without a traceback and exits with status 2.
    """
