"""The one error type the pipeline raises for problems a user can fix."""


class PipelineError(Exception):
    """A user-fixable problem: bad input, bad config, a missing artifact.

    The message is one line naming the file (and row or key), what is wrong, and the fix.
    The command line prints it without a traceback.
    """
