-- fragment: the debounce rule, stated once (the fold marks a group due with it; a flush that
-- finishes with changes that arrived meanwhile, too). A group with changes is due ``window``
-- after its last change, and at the latest ``maxwait`` after the first change since its last
-- claim.
local function due_at(first, last, window, maxwait)
  return math.min((last or first) + window, first + maxwait)
end
