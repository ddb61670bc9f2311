-- fragment: the keys a script was given (bridge/scripts.py). Every key a script touches arrives
-- in KEYS. A script whose keys depend on what it reads (a listing's group, a group's members)
-- is told them by its caller, which reads them first; before it writes, it checks each with
-- declared() and, missing one, answers which instead of writing, so its caller reads again.
local DECLARED = {}
for i = 1, #KEYS do DECLARED[KEYS[i]] = i end
local function declared(name) return DECLARED[name] ~= nil end
