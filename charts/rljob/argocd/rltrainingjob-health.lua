-- Argo CD health check for RLTrainingJob (rljob.dev/v1alpha1).
--
-- Install it under the key resource.customizations.health.rljob.dev_RLTrainingJob of the argocd-cm
-- ConfigMap (see the chart's README). Argo CD runs it with the live object in `obj`; plain Lua 5.1.
--
--   no status yet, Pending, Initializing   -> Progressing
--   Running, condition ClusterReady True   -> Healthy
--   Running, condition ClusterReady False  -> Degraded (workers lost; the StatefulSet replaces them)
--   Succeeded                              -> Healthy
--   Failed                                 -> Degraded, with the reason and message
--   Suspended                              -> Suspended
--   status older than the spec             -> Progressing (the operator has not acted on the change yet)

local hs = {}

local function condition(status, kind)
  if status.conditions == nil then
    return nil
  end
  for _, c in ipairs(status.conditions) do
    if c.type == kind then
      return c
    end
  end
  return nil
end

local function describe(status, fallback)
  local text = fallback
  if status.reason ~= nil and status.reason ~= "" then
    text = status.reason
  end
  if status.message ~= nil and status.message ~= "" then
    text = text .. ": " .. status.message
  end
  return text
end

local function progress(status)
  local parts = {}
  if status.workers ~= nil then
    table.insert(parts, "workers " .. tostring(status.workers))
  end
  local p = status.progress
  if p ~= nil then
    if p.iteration ~= nil then
      table.insert(parts, "iteration " .. tostring(p.iteration))
    end
    if p.episodeReturnMean ~= nil then
      table.insert(parts, "reward " .. tostring(p.episodeReturnMean))
    end
  end
  if #parts == 0 then
    return ""
  end
  return " (" .. table.concat(parts, ", ") .. ")"
end

local status = obj.status
if status == nil or status.phase == nil or status.phase == "" then
  hs.status = "Progressing"
  hs.message = "Waiting for the rljob operator to accept the job"
  return hs
end

local generation = obj.metadata and obj.metadata.generation
if generation ~= nil and status.observedGeneration ~= nil and status.observedGeneration < generation then
  hs.status = "Progressing"
  hs.message = "Waiting for the rljob operator to act on spec generation " .. tostring(generation)
  return hs
end

local phase = status.phase
if phase == "Pending" or phase == "Initializing" then
  hs.status = "Progressing"
  hs.message = describe(status, phase)
elseif phase == "Running" then
  local ready = condition(status, "ClusterReady")
  if ready ~= nil and ready.status == "True" then
    hs.status = "Healthy"
    hs.message = "Training" .. progress(status)
  elseif ready ~= nil and ready.status == "False" then
    hs.status = "Degraded"
    local text = "Ray cluster not ready"
    if ready.reason ~= nil and ready.reason ~= "" then
      text = text .. " (" .. ready.reason .. ")"
    end
    if ready.message ~= nil and ready.message ~= "" then
      text = text .. ": " .. ready.message
    end
    hs.message = text
  else
    hs.status = "Progressing"
    hs.message = describe(status, "Running")
  end
elseif phase == "Succeeded" then
  hs.status = "Healthy"
  hs.message = describe(status, "Succeeded") .. progress(status)
elseif phase == "Failed" then
  hs.status = "Degraded"
  hs.message = describe(status, "Failed")
elseif phase == "Suspended" then
  hs.status = "Suspended"
  hs.message = describe(status, "Suspended")
else
  hs.status = "Unknown"
  hs.message = "Unknown phase " .. tostring(phase)
end
return hs
