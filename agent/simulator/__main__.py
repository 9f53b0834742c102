"""``python -m agent.simulator``: run the Live API simulator until Ctrl-C / SIGTERM."""

from agent.simulator.standalone import main

raise SystemExit(main())
