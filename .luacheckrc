-- luacheck's settings for the bridge's Lua (scripts/luacheck runs it on each assembled script).
std = "lua51"
read_globals = {"redis", "KEYS", "ARGV", "cjson", "cmsgpack", "bit", "struct", "unpack"}
-- Placeholders (__NAME__) are spliced in when a script is loaded (bridge/scripts.py).
ignore = {"113/__[%u%d_]+__"}
max_line_length = 100
