"""The `.bb` archive: the container (format), making one (writer), reading one (reader),
extracting one (extract), and files written whole or not at all (atomic)."""
