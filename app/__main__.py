from toolrelay.app.cli import main

raise SystemExit(main())
