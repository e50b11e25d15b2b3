from mcp_gateway import main

raise SystemExit(main())
