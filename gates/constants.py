"""Every name the pack shows to ComfyUI, the browser or the disk, in one place."""

import re

PACKAGE_PREFIX = "datasete_gate"

NODE_ID = "DataseteImageGate"
NODE_DISPLAY_NAME = "Image Gate (Manual Router)"
CATEGORY = "Datasete/gates"

MAX_ROUTES = 8

ROUTE_PENDING = f"/{PACKAGE_PREFIX}/pending"
ROUTE_CHOOSE = f"/{PACKAGE_PREFIX}/choose"
ROUTE_CANCEL = f"/{PACKAGE_PREFIX}/cancel"
ROUTE_BUS_LIST = f"/{PACKAGE_PREFIX}/bus/list"
# A standalone page (a phone, a second screen) that lists and answers every waiting gate.
ROUTE_REVIEW = f"/{PACKAGE_PREFIX}/review"
# POST {"token"}: the person is still at it; restart the waiting gate's timeout countdown.
ROUTE_TOUCH = f"/{PACKAGE_PREFIX}/touch"

EVENT_PREVIEW = f"{PACKAGE_PREFIX}.preview"
EVENT_RESOLVED = f"{PACKAGE_PREFIX}.resolved"
# A waiting gate's countdown restarted (a touch): {"token", "node_id", "deadline"}, so every tab shows it.
EVENT_DEADLINE = f"{PACKAGE_PREFIX}.deadline"
# What a gate did that is not a pause or a choice ("slot 'x' not found: nothing to gate", a publish
# that failed, a timeout's outcome): {"node_id", "prompt_id", "kind", "reason", "text", ...}.
EVENT_GATE_STATUS = f"{PACKAGE_PREFIX}.gate_status"
# The key of that status in the node's UI output (and so in /history).
GATE_STATUS_UI_KEY = "datasete_gate_status"

# --- timeouts: every gate kind has `timeout` (seconds, 0 = wait forever) and `on_timeout` ----------
TIMEOUT_MAX_SECONDS = 7 * 24 * 3600
ON_TIMEOUT_CANCEL = "cancel"      # end the run as interrupted, as ComfyUI's own Cancel does
ON_TIMEOUT_BLOCK = "block"        # block every output; the run succeeds
IMAGE_ON_TIMEOUT = (ON_TIMEOUT_CANCEL, ON_TIMEOUT_BLOCK) + tuple(f"route_{n}" for n in range(1, MAX_ROUTES + 1))
GRID_ON_TIMEOUT = (ON_TIMEOUT_CANCEL, ON_TIMEOUT_BLOCK, "keep_all", "keep_none")
TEXT_ON_TIMEOUT = (ON_TIMEOUT_CANCEL, ON_TIMEOUT_BLOCK, "approve", "reject")

KIND_IMAGE = "image"

SOURCE_INPUT = "input"
SOURCE_BUS = "bus"

# Preview files live in ComfyUI's temp folder (wiped at start) under this prefix.
PREVIEW_PREFIX = f"{PACKAGE_PREFIX}_preview"

# Seconds between checks of ComfyUI's interrupt flag while a gate waits.
# The wait itself wakes on the choice at once; this only bounds Cancel latency.
WAIT_SLICE_SECONDS = 0.05

# A choose request carries at most one mask PNG; anything bigger is refused
# before it is read into memory.
MAX_REQUEST_BYTES = 64 * 1024 * 1024

# How many resolved tokens are remembered to answer 409 rather than 404.
RESOLVED_TOKEN_MEMORY = 4096

BUS_DIR_NAME = "gate_bus"
SLOT_ID_PATTERN = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,63}")
SLOT_IMAGE = "image.png"
SLOT_MASK = "mask.png"
SLOT_MANIFEST = "slot.json"
# Frames after the first are stored beside image.png as frame_0001.png, ...
SLOT_FRAME_TEMPLATE = "frame_{:04d}.png"
# Masks of frames 1.. when the frames have different masks (mask.png is frame 0's, or everyone's).
SLOT_MASK_FRAME_TEMPLATE = "mask_{:04d}.png"
# Scratch names start with "." so they can never be a slot id.
SLOT_STAGING_PREFIX = ".staging-"

# --- Image Folder Loader and Text Gate ------------------------------------------------------------

LOADER_NODE_ID = "DataseteImageFolderLoader"
LOADER_DISPLAY_NAME = "Image Folder Loader"
TEXT_GATE_NODE_ID = "DataseteTextGate"
TEXT_GATE_DISPLAY_NAME = "Text Gate"

LOADER_MODES = ("next", "index", "all")
KIND_TEXT = "text"

ROUTE_FOLDERS = f"/{PACKAGE_PREFIX}/folders"
ROUTE_LOADER_STATE = f"/{PACKAGE_PREFIX}/loader/state"
ROUTE_LOADER_RESET = f"/{PACKAGE_PREFIX}/loader/reset"
# Where a loader is in its folder ("37 of 120", "done: 120 of 120", "no images", a reset).
EVENT_LOADER = f"{PACKAGE_PREFIX}.loader"

# Walk positions live in ComfyUI's user folder (not in the dataset, which may be read-only or shared).
LOADER_STATE_DIR = ("datasete_gates", "loader")

# A caption is the image's same-stem file with the first of these extensions that exists.
CAPTION_EXTENSIONS = (".txt", ".caption")
# What the Text Gate writes.
CAPTION_WRITE_EXTENSION = ".txt"
# Scratch files of an atomic write (captions, walk positions) start with "." (never listed) and end with this.
SCRATCH_SUFFIX = ".datasete-tmp"

# The largest text a Text Gate takes as an answer, in UTF-8 bytes.
MAX_TEXT_BYTES = 1024 * 1024

# The folder picker lists input subfolders this deep, and at most this many.
FOLDER_PICKER_DEPTH = 4
FOLDER_PICKER_LIMIT = 2000

# --- the image pool and the Grid Pool Gate --------------------------------------------------

POOL_NODE_ID = "DataseteAddToImagePool"
POOL_NODE_DISPLAY_NAME = "Add to Image Pool"
GRID_NODE_ID = "DataseteGridPoolGate"
GRID_NODE_DISPLAY_NAME = "Grid Pool Gate"

ROUTE_POOL_LIST = f"/{PACKAGE_PREFIX}/pool/list"
# What a pool node did or why it did not pause ("pool 'x' has nothing pending"), for every tab.
EVENT_POOL_STATUS = f"{PACKAGE_PREFIX}.pool_status"

KIND_GRID = "grid"
SOURCE_POOL = "pool"

# input/gate_pool/<pool>/{pending,kept,rejected}/<name>.png (+ <name>.txt): state is the folder.
POOL_DIR_NAME = "gate_pool"
POOL_PENDING, POOL_KEPT, POOL_REJECTED = "pending", "kept", "rejected"
POOL_STATES = (POOL_PENDING, POOL_KEPT, POOL_REJECTED)
POOL_NAME_DIGITS = 6                  # 000001, 000002, ...
POOL_COUNTER_FILE = ".next"           # the next number; max(existing names) + 1 is its floor
POOL_INDEX_FILE = ".index"            # pixel hashes for skip_duplicates: a cache, rebuilt from the files
POOL_LOCK_FILE = ".lock"              # held while a pool changes, so processes take turns
POOL_STAGING_PREFIX = ".staging-"     # hidden scratch names; never an item

GRID_PAGE_SIZE_DEFAULT = 16
GRID_PAGE_SIZE_MAX = 64
# Thumbnails for the grid: the longest side, in pixels. The full size is one double click away.
GRID_THUMB_SIZE = 256
