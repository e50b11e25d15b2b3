from gwfast.cli import main

raise SystemExit(main())
