import os
import socket

from celery import shared_task
from mysite.version import VERSION


@shared_task(name="notes.tasks.release_echo")
def release_echo(text):
    """The text, the release the worker runs, the worker's pid and its host: shows which code ran it, where."""
    return f"{text} from release {VERSION} (pid {os.getpid()} on {socket.gethostname()})"
