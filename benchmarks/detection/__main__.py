from benchmarks.detection.run import main

raise SystemExit(main())
