// The worker's real work: a verified plan, its data, Gloo communicators and
// the actor executor, behind the cluster's RankBackend interface.
#pragma once

#include "runtime/cluster/Worker.h"

#include <memory>

namespace sbpflow::cluster {

std::unique_ptr<RankBackend> makePlanBackend();

} // namespace sbpflow::cluster
