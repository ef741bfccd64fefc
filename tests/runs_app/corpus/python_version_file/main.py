import sys

import six

print("corpus ok", "%d.%d" % sys.version_info[:2], six.__version__)
