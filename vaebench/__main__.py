"""`python -m vaebench` is the `vaebench` command."""

import os

if os.environ.get("VAEBENCH_WORKER"):
    # Before the seconds of imports below: SIGUSR2 (SLURM's warning before a time limit) would otherwise
    # end a worker at once (`vaebench.train.signals`).
    from vaebench.train.signals import EXIT_REQUEUE, StopToRequeue, install_requeue_handlers

    install_requeue_handlers()
    try:
        from vaebench.cli import main
    except StopToRequeue as stop:
        print(stop, flush=True)
        raise SystemExit(EXIT_REQUEUE) from None
else:
    from vaebench.cli import main

main()
