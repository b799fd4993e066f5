-- Argo CD health check for respawn.dev/PipelineRun (Lua 5.1, as Argo CD runs it).
-- Install: docs/argocd.md. Tested by tests/ship/test_argocd_health.py.
--
--   Succeeded                      -> Healthy
--   Pending / Running / Retrying   -> Progressing (a preempted run being rescheduled
--                                     is Retrying: Progressing, not Degraded)
--   Suspended                      -> Suspended
--   Failed                         -> Degraded, with the operator's message
--   no status yet, or a spec change the operator has not seen -> Progressing
local hs = {}

local function condition(status, ctype)
  if status.conditions == nil then
    return nil
  end
  for _, c in ipairs(status.conditions) do
    if c.type == ctype then
      return c
    end
  end
  return nil
end

-- "step 3/5 (crop_frames), 2 preemptions"; a fan-out parent: "items 7/10, 3 running, 2 preemptions"
local function progress(status)
  local parts = {}
  if status.items ~= nil and status.items.total ~= nil then
    local items = "items " .. tostring(status.items.succeeded or 0) .. "/" .. tostring(status.items.total)
    if status.items.running ~= nil and status.items.running > 0 then
      items = items .. ", " .. tostring(status.items.running) .. " running"
    end
    if status.items.failed ~= nil and status.items.failed > 0 then
      items = items .. ", " .. tostring(status.items.failed) .. " failed"
    end
    table.insert(parts, items)
  end
  if status.completedSteps ~= nil and status.totalSteps ~= nil then
    local step = "step " .. tostring(status.completedSteps) .. "/" .. tostring(status.totalSteps)
    if status.currentStep ~= nil and status.currentStep ~= "" then
      step = step .. " (" .. status.currentStep .. ")"
    end
    table.insert(parts, step)
  end
  if status.preemptions ~= nil and status.preemptions > 0 then
    local noun = " preemptions"
    if status.preemptions == 1 then
      noun = " preemption"
    end
    table.insert(parts, tostring(status.preemptions) .. noun)
  end
  return table.concat(parts, ", ")
end

local function with_detail(text, detail)
  if detail == nil or detail == "" then
    return text
  end
  return text .. ": " .. detail
end

local status = obj.status
if status == nil or status.phase == nil or status.phase == "" then
  hs.status = "Progressing"
  hs.message = "Waiting for the Respawn operator to pick up the run"
  return hs
end

local generation = nil
if obj.metadata ~= nil then
  generation = obj.metadata.generation
end
if generation ~= nil and status.observedGeneration ~= nil and status.observedGeneration < generation then
  hs.status = "Progressing"
  hs.message = "Waiting for the Respawn operator to act on generation " .. tostring(generation)
  return hs
end

local phase = status.phase
local suspend = obj.spec ~= nil and obj.spec.suspend == true

if phase == "Succeeded" then
  hs.status = "Healthy"
  hs.message = status.message
  if hs.message == nil or hs.message == "" then
    hs.message = with_detail("Succeeded", progress(status))
  end
  return hs
end

if phase == "Failed" then
  hs.status = "Degraded"
  hs.message = status.message
  if hs.message == nil or hs.message == "" then
    local c = condition(status, "Succeeded")
    if c ~= nil and c.message ~= nil and c.message ~= "" then
      hs.message = c.message
    else
      hs.message = "Failed"
    end
  end
  return hs
end

if phase == "Suspended" then
  hs.status = "Suspended"
  hs.message = with_detail("Suspended", progress(status))
  return hs
end

if phase == "Pending" or phase == "Running" or phase == "Retrying" then
  hs.status = "Progressing"
  if suspend then
    hs.message = with_detail("Suspending after the next checkpoint", progress(status))
  elseif phase == "Retrying" then
    local why = status.message
    if why == nil or why == "" then
      why = progress(status)
    end
    hs.message = with_detail("Retrying", why)
  else
    hs.message = with_detail(phase, progress(status))
  end
  return hs
end

hs.status = "Unknown"
hs.message = "Unknown phase " .. tostring(phase)
return hs
