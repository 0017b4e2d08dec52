from celeriac.cli.main import main

raise SystemExit(main())
