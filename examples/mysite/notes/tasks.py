import os

from celery import shared_task
from mysite.version import VERSION


@shared_task(name="notes.tasks.release_echo")
def release_echo(text):
    """The text, the release the worker runs and the worker's pid: shows which code ran it."""
    return f"{text} from release {VERSION} (pid {os.getpid()})"
