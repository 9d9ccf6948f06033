from meshmirror.cli.main import main

raise SystemExit(main())
