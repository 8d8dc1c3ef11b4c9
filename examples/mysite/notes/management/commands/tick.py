"""A job for a scheduler (cron, systemd timer): one line per run in $MYSITE_TICK_FILE.

Each line names when it ran, which release and settings ran it, and the process, e.g.
2026-12-02T07:00:00+00:00 release=1 settings=mysite.settings.production pid=123
With --sleep the run writes a "start" line, sleeps, then an "end" line, so overlapping runs
show as interleaved lines.
"""

import os
import time
from datetime import UTC, datetime

from django.core.management.base import BaseCommand, CommandError
from mysite.version import VERSION


class Command(BaseCommand):
    help = "Append a line naming the time, release, settings and pid to $MYSITE_TICK_FILE."

    def add_arguments(self, parser):
        parser.add_argument("--sleep", type=float, default=0, metavar="SECONDS",
                            help='Write a "start" line, sleep this long, then write an "end" line.')
        parser.add_argument("--fail", action="store_true", help="Exit with an error after writing.")

    def handle(self, *args, **options):
        path = os.environ.get("MYSITE_TICK_FILE", "")
        if not path:
            raise CommandError("Set MYSITE_TICK_FILE to the file to append to.")
        if options["sleep"] < 0:
            raise CommandError("--sleep takes a number of seconds, 0 or more.")
        if options["sleep"]:
            self._write(path, " start")
            time.sleep(options["sleep"])
            self._write(path, " end")
        else:
            self._write(path, "")
        if options["fail"]:
            raise CommandError("tick failed on purpose")

    def _write(self, path, suffix):
        stamp = datetime.now(UTC).isoformat(timespec="seconds")
        settings_module = os.environ.get("DJANGO_SETTINGS_MODULE", "")
        line = f"{stamp} release={VERSION} settings={settings_module} pid={os.getpid()}{suffix}\n"
        # One write in append mode: lines from concurrent runs never mix.
        with open(path, "a", encoding="utf-8") as handle:
            handle.write(line)
        self.stdout.write(line, ending="")
