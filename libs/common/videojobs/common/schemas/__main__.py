import sys

from videojobs.common.schemas import main

sys.exit(main())
