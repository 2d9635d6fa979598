from geminilive.cli import main

raise SystemExit(main())
