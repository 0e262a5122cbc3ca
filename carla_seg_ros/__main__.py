from carla_seg_ros.cli import main

raise SystemExit(main())
