// The `sbp` dialect: registration, the short SBP assembly (S(0), B, P(sum))
// inside tensor encodings, and the helpers on encoded tensor types.
#include "ir/SbpDialect.h"

#include "runtime/plan/OpInfo.h"

#include "mlir/IR/DialectImplementation.h"
#include "llvm/ADT/TypeSwitch.h"

#include <cmath>
#include <cstring>

using namespace mlir;
using namespace mlir::sbp;

#include "ir/SbpDialect.cpp.inc"
#include "ir/SbpEnums.cpp.inc"

#define GET_ATTRDEF_CLASSES
#include "ir/SbpAttrs.cpp.inc"

#include "ir/SbpAttrInterfaces.cpp.inc"
#include "ir/SbpInterfaces.cpp.inc"

void SbpDialect::initialize() {
  registerAttributes();
  addOperations<
#define GET_OP_LIST
#include "ir/SbpOps.cpp.inc"
      >();
}

void SbpDialect::registerAttributes() {
  addAttributes<
#define GET_ATTRDEF_LIST
#include "ir/SbpAttrs.cpp.inc"
      >();
}

//===-- SbpDim <-> attributes ----------------------------------------------===//

namespace mlir::sbp {

std::string toString(llvm::ArrayRef<SbpDim> dims) {
  return sbpflow::toString(sbpflow::NdSbp(dims.begin(), dims.end()));
}

std::string SbpSignature::str() const {
  std::string s;
  for (size_t i = 0; i < operands.size(); ++i)
    s += (i ? " x " : "") + toString(operands[i]);
  s += " -> ";
  for (size_t i = 0; i < results.size(); ++i)
    s += (i ? ", " : "") + toString(results[i]);
  if (results.empty())
    s += "()";
  return s;
}

std::optional<SbpDim> sbpDimFromAttr(Attribute attr) {
  if (auto s = llvm::dyn_cast_or_null<SplitAttr>(attr))
    return splitDim(static_cast<int>(s.getAxis()));
  if (llvm::isa_and_nonnull<BroadcastAttr>(attr))
    return broadcastDim();
  if (auto p = llvm::dyn_cast_or_null<PartialAttr>(attr)) {
    switch (p.getReduce()) {
    case ReduceKind::sum:
      return SbpDim{SbpKind::PartialSum, 0};
    case ReduceKind::max:
      return SbpDim{SbpKind::PartialMax, 0};
    case ReduceKind::min:
      return SbpDim{SbpKind::PartialMin, 0};
    }
  }
  return std::nullopt;
}

Attribute sbpDimToAttr(MLIRContext *ctx, SbpDim d) {
  switch (d.kind) {
  case SbpKind::Split:
    return SplitAttr::get(ctx, d.axis);
  case SbpKind::Broadcast:
    return BroadcastAttr::get(ctx);
  case SbpKind::PartialSum:
    return PartialAttr::get(ctx, ReduceKind::sum);
  case SbpKind::PartialMax:
    return PartialAttr::get(ctx, ReduceKind::max);
  case SbpKind::PartialMin:
    return PartialAttr::get(ctx, ReduceKind::min);
  }
  return {};
}

SbpTensorAttr getSbp(Type type) {
  auto ranked = llvm::dyn_cast_or_null<RankedTensorType>(type);
  if (!ranked)
    return {};
  return llvm::dyn_cast_or_null<SbpTensorAttr>(ranked.getEncoding());
}

RankedTensorType withSbp(Type type, SbpTensorAttr encoding) {
  auto ranked = llvm::cast<RankedTensorType>(type);
  return RankedTensorType::get(ranked.getShape(), ranked.getElementType(), encoding);
}

RankedTensorType withPartialSum(Type type, unsigned dim) {
  SbpTensorAttr enc = getSbp(type);
  llvm::SmallVector<SbpDim, 2> dims = getSbpDims(enc);
  dims[dim] = partialSumDim();
  return withSbp(type, makeSbpTensorAttr(type.getContext(), enc.getPlacement().getValue(), dims));
}

void setSbp(Value value, SbpTensorAttr encoding) {
  value.setType(withSbp(value.getType(), encoding));
}

static char typeRule(Operation *op, unsigned i, bool operand) {
  auto planOp = llvm::dyn_cast<PlanOpInterface>(op);
  const sbpflow::OpInfo *info = planOp ? sbpflow::opInfo(planOp.getPlanKind()) : nullptr;
  if (!info)
    return 0;
  const char *rules = operand ? info->inTypes : info->outTypes;
  size_t n = std::strlen(rules);
  return n == 0 ? 'A' : rules[std::min<size_t>(i, n - 1)];
}
char operandTypeRule(Operation *op, unsigned i) { return typeRule(op, i, true); }
char resultTypeRule(Operation *op, unsigned i) { return typeRule(op, i, false); }

SbpTensorAttr makeSbpTensorAttr(MLIRContext *ctx, llvm::StringRef placement,
                                llvm::ArrayRef<SbpDim> dims) {
  llvm::SmallVector<Attribute> attrs;
  for (SbpDim d : dims)
    attrs.push_back(sbpDimToAttr(ctx, d));
  return SbpTensorAttr::get(ctx, FlatSymbolRefAttr::get(ctx, placement),
                            ArrayAttr::get(ctx, attrs));
}

llvm::SmallVector<SbpDim, 2> getSbpDims(SbpTensorAttr attr) {
  llvm::SmallVector<SbpDim, 2> dims;
  if (!attr)
    return dims;
  for (Attribute a : attr.getSbp())
    dims.push_back(sbpDimFromAttr(a).value_or(broadcastDim()));
  return dims;
}

} // namespace mlir::sbp

//===-- attribute assembly -------------------------------------------------===//

Attribute PartialAttr::parse(AsmParser &parser, Type) {
  std::string kw;
  SMLoc loc = parser.getCurrentLocation();
  if (parser.parseLess() || parser.parseKeywordOrString(&kw) || parser.parseGreater())
    return {};
  auto kind = symbolizeReduceKind(kw);
  if (!kind) {
    parser.emitError(loc, "unknown partial reduction '") << kw << "' (expected sum, max or min)";
    return {};
  }
  return PartialAttr::get(parser.getContext(), *kind);
}

void PartialAttr::print(AsmPrinter &printer) const {
  printer << "<" << stringifyReduceKind(getReduce()) << ">";
}

// One SBP dimension in short form (S(0), B, P(sum)) or as a full attribute.
static FailureOr<Attribute> parseShortSbpDim(AsmParser &parser) {
  MLIRContext *ctx = parser.getContext();
  SMLoc loc = parser.getCurrentLocation();
  llvm::StringRef kw;
  if (failed(parser.parseOptionalKeyword(&kw))) {
    Attribute attr;
    if (parser.parseAttribute(attr))
      return failure();
    if (!sbpDimFromAttr(attr)) {
      parser.emitError(loc, "expected an SBP dimension (S(axis), B or P(sum|max|min))");
      return failure();
    }
    return attr;
  }
  if (kw == "B")
    return Attribute(BroadcastAttr::get(ctx));
  if (kw == "S") {
    int64_t axis;
    if (parser.parseLParen() || parser.parseInteger(axis) || parser.parseRParen())
      return failure();
    if (axis < 0) {
      parser.emitError(loc, "split axis must be non-negative, got ") << axis;
      return failure();
    }
    return Attribute(SplitAttr::get(ctx, axis));
  }
  if (kw == "P") {
    std::string op;
    if (parser.parseLParen() || parser.parseKeywordOrString(&op) || parser.parseRParen())
      return failure();
    auto kind = symbolizeReduceKind(op);
    if (!kind) {
      parser.emitError(loc, "unknown partial reduction '") << op << "' (expected sum, max or min)";
      return failure();
    }
    return Attribute(PartialAttr::get(ctx, *kind));
  }
  parser.emitError(loc, "expected an SBP dimension S(axis), B or P(sum|max|min), got '")
      << kw << "'";
  return failure();
}

Attribute SbpTensorAttr::parse(AsmParser &parser, Type) {
  StringAttr placement;
  llvm::SmallVector<Attribute> dims;
  if (parser.parseLess() || parser.parseSymbolName(placement) || parser.parseComma())
    return {};
  auto parseOne = [&]() -> ParseResult {
    FailureOr<Attribute> d = parseShortSbpDim(parser);
    if (failed(d))
      return failure();
    dims.push_back(*d);
    return success();
  };
  if (parser.parseCommaSeparatedList(AsmParser::Delimiter::Square, parseOne) ||
      parser.parseGreater())
    return {};
  return parser.getChecked<SbpTensorAttr>(parser.getContext(), FlatSymbolRefAttr::get(placement),
                                          ArrayAttr::get(parser.getContext(), dims));
}

void SbpTensorAttr::print(AsmPrinter &printer) const {
  printer << "<";
  printer.printSymbolName(getPlacement().getValue());
  printer << ", " << toString(getSbpDims(*this)) << ">";
}

LogicalResult SbpTensorAttr::verify(llvm::function_ref<InFlightDiagnostic()> emitError,
                                    FlatSymbolRefAttr placement, ArrayAttr sbp) {
  if (!placement)
    return emitError() << "SBP encoding needs a placement";
  if (!sbp || sbp.empty())
    return emitError() << "SBP encoding needs one SBP per hierarchy dimension, got none";
  for (Attribute a : sbp) {
    std::optional<SbpDim> d = sbpDimFromAttr(a);
    if (!d)
      return emitError() << "SBP encoding element " << a << " is not an SBP dimension";
    if (d->kind == SbpKind::Split && d->axis < 0)
      return emitError() << "split axis must be non-negative, got " << d->axis;
  }
  return success();
}

Attribute InitAttr::parse(AsmParser &parser, Type) {
  std::string kw;
  SMLoc loc = parser.getCurrentLocation();
  double a = 0, b = 0;
  if (parser.parseLess() || parser.parseKeywordOrString(&kw))
    return {};
  auto kind = symbolizeInitKind(kw);
  if (!kind) {
    parser.emitError(loc, "unknown initialiser '")
        << kw << "' (expected zeros, constant, uniform or normal)";
    return {};
  }
  if (succeeded(parser.parseOptionalComma())) {
    if (parser.parseFloat(a))
      return {};
    if (succeeded(parser.parseOptionalComma()) && parser.parseFloat(b))
      return {};
  }
  if (parser.parseGreater())
    return {};
  return parser.getChecked<InitAttr>(loc, parser.getContext(), *kind, llvm::APFloat(a),
                                     llvm::APFloat(b));
}

// Parameters a random draw or a constant can be made from.
LogicalResult InitAttr::verify(llvm::function_ref<InFlightDiagnostic()> emitError, InitKind kind,
                               llvm::APFloat a, llvm::APFloat b) {
  double lo = a.convertToDouble(), hi = b.convertToDouble();
  if (!std::isfinite(lo) || !std::isfinite(hi))
    return emitError() << "initialiser parameters must be finite";
  if (kind == InitKind::uniform && !(lo < hi))
    return emitError() << "uniform initialiser needs low < high, got [" << lo << ", " << hi << ")";
  if (kind == InitKind::normal && hi < 0)
    return emitError() << "normal initialiser needs a standard deviation >= 0, got " << hi;
  return success();
}

void InitAttr::print(AsmPrinter &printer) const {
  printer << "<" << stringifyInitKind(getKind()) << ", ";
  printer.printFloat(getA());
  printer << ", ";
  printer.printFloat(getB());
  printer << ">";
}

namespace {

struct NamedFloat {
  llvm::StringRef name;
  double *value;
};

// `<key = value, ...>` of an optimiser attribute: every key one of `fields`,
// `lr` required (the others keep the defaults their variables hold).
ParseResult parseNamedFloats(AsmParser &parser, llvm::StringRef attr,
                             llvm::ArrayRef<NamedFloat> fields) {
  SMLoc start = parser.getCurrentLocation();
  bool haveLr = false;
  if (parser.parseLess())
    return failure();
  auto parseField = [&]() -> ParseResult {
    llvm::StringRef key;
    SMLoc loc = parser.getCurrentLocation();
    double value;
    if (parser.parseKeyword(&key) || parser.parseEqual() || parser.parseFloat(value))
      return failure();
    for (const NamedFloat &f : fields)
      if (key == f.name) {
        *f.value = value;
        haveLr |= key == "lr";
        return success();
      }
    std::string expected;
    for (const NamedFloat &f : fields)
      expected += (expected.empty() ? "" : ", ") + f.name.str();
    return parser.emitError(loc, "unknown ")
           << attr << " parameter '" << key << "' (expected " << expected << ")";
  };
  if (parser.parseCommaSeparatedList(parseField) || parser.parseGreater())
    return failure();
  if (!haveLr)
    return parser.emitError(start, "#sbp.") << attr << " needs lr";
  return success();
}

void printNamedFloats(AsmPrinter &printer,
                      llvm::ArrayRef<std::pair<llvm::StringRef, llvm::APFloat>> fields) {
  printer << "<";
  for (auto [i, f] : llvm::enumerate(fields)) {
    printer << (i ? ", " : "") << f.first << " = ";
    printer.printFloat(f.second);
  }
  printer << ">";
}

} // namespace

//===-- #sbp.codec ----------------------------------------------------------===//

bool mlir::sbp::isSparseCodec(CodecKind kind) {
  return kind == CodecKind::topk || kind == CodecKind::dgc || kind == CodecKind::randomk ||
         kind == CodecKind::topk2bit;
}

bool mlir::sbp::lgrecoAdapts(CodecKind kind) {
  return kind == CodecKind::topk || kind == CodecKind::topk2bit || kind == CodecKind::qsgd ||
         kind == CodecKind::powersgd;
}

bool mlir::sbp::takesMomentum(CodecKind kind) {
  return kind == CodecKind::dgc || kind == CodecKind::sign;
}

bool mlir::sbp::compressesAdamUpdate(CodecKind kind) {
  return kind == CodecKind::dgc || kind == CodecKind::topk || kind == CodecKind::topk2bit;
}

CodecFields mlir::sbp::CodecFields::of(CodecAttr c) {
  CodecFields f;
  f.kind = c.getKind();
  f.density = c.getDensity().convertToDouble();
  f.bits = c.getBits();
  f.rank = c.getRank();
  f.momentum = c.getMomentum().convertToDouble();
  f.clip = c.getClip().convertToDouble();
  f.warmup = c.getWarmup();
  f.epochSteps = c.getEpochSteps();
  f.bucket = c.getBucket();
  f.seed = c.getSeed();
  f.beta2 = c.getBeta2().convertToDouble();
  f.eps = c.getEps().convertToDouble();
  f.chunk = c.getChunk();
  f.decay = c.getDecay().convertToDouble();
  f.temperature = c.getTemperature().convertToDouble();
  f.senders = c.getSenders();
  f.stepWeight = c.getStepWeight().convertToDouble();
  return f;
}

CodecAttr mlir::sbp::CodecFields::get(MLIRContext *ctx) const {
  using llvm::APFloat;
  return CodecAttr::get(ctx, kind, APFloat(density), bits, rank, APFloat(momentum), APFloat(clip),
                        warmup, epochSteps, bucket, seed, APFloat(beta2), APFloat(eps), chunk,
                        APFloat(decay), APFloat(temperature), senders, APFloat(stepWeight));
}

CodecAttr mlir::sbp::codecWith(MLIRContext *ctx, CodecKind kind, double value) {
  CodecFields f;
  f.kind = kind;
  const auto integral = static_cast<int64_t>(value);
  if (isSparseCodec(kind))
    f.density = value;
  if (kind == CodecKind::qsgd)
    f.bits = integral;
  if (kind == CodecKind::powersgd)
    f.rank = integral;
  return f.get(ctx);
}

Attribute CodecAttr::parse(AsmParser &parser, Type) {
  SMLoc start = parser.getCurrentLocation();
  llvm::StringRef name;
  if (parser.parseLess() || parser.parseKeyword(&name))
    return {};
  std::optional<CodecKind> kind = symbolizeCodecKind(name);
  if (!kind) {
    parser.emitError(start, "unknown codec '")
        << name << "' (expected topk, dgc, randomk, qsgd, sign, powersgd, topk2bit or edit)";
    return {};
  }
  CodecFields c; // the defaults, the named fields then read into it
  c.kind = *kind;
  const std::pair<llvm::StringRef, double *> floats[] = {{"density", &c.density},
                                                         {"momentum", &c.momentum},
                                                         {"clip", &c.clip},
                                                         {"beta2", &c.beta2},
                                                         {"eps", &c.eps},
                                                         {"decay", &c.decay},
                                                         {"temperature", &c.temperature},
                                                         {"step_weight", &c.stepWeight}};
  const std::pair<llvm::StringRef, int64_t *> ints[] = {
      {"bits", &c.bits},     {"rank", &c.rank},
      {"warmup", &c.warmup}, {"epoch_steps", &c.epochSteps},
      {"bucket", &c.bucket}, {"seed", &c.seed},
      {"chunk", &c.chunk},   {"senders", &c.senders}};
  while (succeeded(parser.parseOptionalComma())) {
    llvm::StringRef key;
    SMLoc loc = parser.getCurrentLocation();
    if (parser.parseKeyword(&key) || parser.parseEqual())
      return {};
    auto *f = llvm::find_if(floats, [&](const auto &e) { return e.first == key; });
    auto *i = llvm::find_if(ints, [&](const auto &e) { return e.first == key; });
    if (f != std::end(floats)) {
      if (parser.parseFloat(*f->second))
        return {};
    } else if (i != std::end(ints)) {
      if (parser.parseInteger(*i->second))
        return {};
    } else {
      parser.emitError(loc, "unknown codec parameter '")
          << key << "' (expected density, bits, rank, momentum, clip, warmup, epoch_steps, "
          << "bucket, seed, beta2, eps, chunk, decay, temperature, senders or step_weight)";
      return {};
    }
  }
  if (parser.parseGreater())
    return {};
  using llvm::APFloat;
  return parser.getChecked<CodecAttr>(
      start, parser.getContext(), c.kind, APFloat(c.density), c.bits, c.rank, APFloat(c.momentum),
      APFloat(c.clip), c.warmup, c.epochSteps, c.bucket, c.seed, APFloat(c.beta2), APFloat(c.eps),
      c.chunk, APFloat(c.decay), APFloat(c.temperature), c.senders, APFloat(c.stepWeight));
}

LogicalResult CodecAttr::verify(llvm::function_ref<InFlightDiagnostic()> emitError, CodecKind kind,
                                llvm::APFloat densityF, int64_t bits, int64_t rank,
                                llvm::APFloat momentumF, llvm::APFloat clipF, int64_t warmup,
                                int64_t epochSteps, int64_t bucket, int64_t, llvm::APFloat beta2F,
                                llvm::APFloat epsF, int64_t chunk, llvm::APFloat decayF,
                                llvm::APFloat temperatureF, int64_t senders,
                                llvm::APFloat stepWeightF) {
  const double density = densityF.convertToDouble(), momentum = momentumF.convertToDouble(),
               clip = clipF.convertToDouble(), beta2 = beta2F.convertToDouble(),
               eps = epsF.convertToDouble();
  if (isSparseCodec(kind) && !(density > 0 && density <= 1))
    return emitError() << "#sbp.codec<" << stringifyCodecKind(kind)
                       << "> needs a density in (0, 1], got " << density;
  if (kind == CodecKind::qsgd && (bits < 2 || bits > 8 || bucket < 1))
    return emitError() << "#sbp.codec<qsgd> needs 2 <= bits <= 8 and bucket >= 1, got bits = "
                       << bits << ", bucket = " << bucket;
  if (kind == CodecKind::sign && bucket < 1)
    return emitError() << "#sbp.codec<sign> needs bucket >= 1, got " << bucket;
  if (kind == CodecKind::powersgd && rank < 1)
    return emitError() << "#sbp.codec<powersgd> needs rank >= 1, got " << rank;
  if (!(momentum >= 0 && momentum < 1) || !(clip >= 0))
    return emitError() << "#sbp.codec needs 0 <= momentum < 1 and clip >= 0, got momentum = "
                       << momentum << ", clip = " << clip;
  if ((beta2 != 0 || eps != 0) &&
      (!compressesAdamUpdate(kind) || !(beta2 > 0 && beta2 < 1) || !(eps > 0)))
    return emitError() << "#sbp.codec<" << stringifyCodecKind(kind)
                       << ">: beta2 and eps are dgc's, topk's and topk2bit's under AdamW (0 < "
                          "beta2 < 1, eps > 0), got beta2 = "
                       << beta2 << ", eps = " << eps;
  const bool adam = beta2 > 0;
  if ((momentum > 0 && !takesMomentum(kind) && !adam) ||
      (clip > 0 && kind != CodecKind::dgc && kind != CodecKind::edit && !adam))
    return emitError() << "#sbp.codec<" << stringifyCodecKind(kind)
                       << ">: only dgc and sign keep a momentum, and only dgc clips (and topk "
                          "and topk2bit under AdamW)";
  if (warmup < 0 || epochSteps < 0 || warmup > INT32_MAX)
    return emitError() << "#sbp.codec needs 0 <= warmup <= 2^31 - 1 and epoch_steps >= 0, got "
                       << warmup << " and " << epochSteps;
  const double temperature = temperatureF.convertToDouble();
  if (temperature != 0 && (kind != CodecKind::edit || !(temperature > 0)))
    return emitError() << "#sbp.codec<" << stringifyCodecKind(kind)
                       << ">: temperature is edit's (> 0, or 0 for equal weights), got "
                       << temperature;
  // Chunk offsets travel as 16 bits.
  const double decay = decayF.convertToDouble();
  if ((chunk != 0 || decay != 1) &&
      (kind != CodecKind::topk2bit || chunk < 0 || chunk > 65536 || !(decay > 0 && decay <= 1)))
    return emitError() << "#sbp.codec<" << stringifyCodecKind(kind)
                       << ">: chunk and decay are topk2bit's (0 <= chunk <= 65536, 0 < decay <= "
                          "1), got chunk = "
                       << chunk << ", decay = " << decay;
  if (senders != 0 && (kind != CodecKind::topk2bit || senders != 1))
    return emitError() << "#sbp.codec<" << stringifyCodecKind(kind)
                       << ">: senders is topk2bit's (0: the sum, 1: each index's mean over the "
                          "ranks that sent it), got "
                       << senders;
  const double stepWeight = stepWeightF.convertToDouble();
  if (stepWeight != 0 && (kind != CodecKind::edit || !(stepWeight > 0 && stepWeight <= 1)))
    return emitError() << "#sbp.codec<" << stringifyCodecKind(kind)
                       << ">: step_weight is edit's (A-EDiT's ratio, in (0, 1]), got "
                       << stepWeight;
  return success();
}

void CodecAttr::print(AsmPrinter &printer) const {
  const CodecKind kind = getKind();
  printer << "<" << stringifyCodecKind(kind);
  auto field = [&](llvm::StringRef name, auto value) { printer << ", " << name << " = " << value; };
  if (isSparseCodec(kind))
    field("density", getDensity().convertToDouble());
  if (kind == CodecKind::qsgd)
    field("bits", getBits());
  if (kind == CodecKind::qsgd || kind == CodecKind::sign)
    field("bucket", getBucket());
  if (kind == CodecKind::powersgd)
    field("rank", getRank());
  if (!getMomentum().isZero())
    field("momentum", getMomentum().convertToDouble());
  if (!getClip().isZero())
    field("clip", getClip().convertToDouble());
  if (!getBeta2().isZero())
    field("beta2", getBeta2().convertToDouble());
  if (!getEps().isZero())
    field("eps", getEps().convertToDouble());
  if (getEpochSteps() != 0)
    field("epoch_steps", getEpochSteps());
  if (getWarmup() != 0)
    field("warmup", getWarmup());
  if (getSeed() != 0)
    field("seed", getSeed());
  if (getChunk() != 0)
    field("chunk", getChunk());
  if (!getDecay().isExactlyValue(1.0))
    field("decay", getDecay().convertToDouble());
  if (!getTemperature().isZero())
    field("temperature", getTemperature().convertToDouble());
  if (getSenders() != 0)
    field("senders", getSenders());
  if (!getStepWeight().isZero())
    field("step_weight", getStepWeight().convertToDouble());
  printer << ">";
}

Attribute SgdAttr::parse(AsmParser &parser, Type) {
  double lr = 0, momentum = 0, wd = 0;
  SMLoc start = parser.getCurrentLocation();
  if (failed(parseNamedFloats(parser, "sgd",
                              {{"lr", &lr}, {"momentum", &momentum}, {"weight_decay", &wd}})))
    return {};
  return parser.getChecked<SgdAttr>(start, parser.getContext(), llvm::APFloat(lr),
                                    llvm::APFloat(momentum), llvm::APFloat(wd));
}

LogicalResult SgdAttr::verify(llvm::function_ref<InFlightDiagnostic()> emitError, llvm::APFloat lr,
                              llvm::APFloat momentum, llvm::APFloat weightDecay) {
  if (!(lr.convertToDouble() > 0) || !(momentum.convertToDouble() >= 0) ||
      !(weightDecay.convertToDouble() >= 0))
    return emitError() << "#sbp.sgd needs lr > 0, momentum >= 0 and weight_decay >= 0, got lr = "
                       << lr.convertToDouble() << ", momentum = " << momentum.convertToDouble()
                       << ", weight_decay = " << weightDecay.convertToDouble();
  return success();
}

void SgdAttr::print(AsmPrinter &printer) const {
  printNamedFloats(
      printer, {{"lr", getLr()}, {"momentum", getMomentum()}, {"weight_decay", getWeightDecay()}});
}

// Fields are named; lr is required, the others default to PyTorch's
// torch.optim.AdamW (betas 0.9, 0.999, eps 1e-8, weight decay 0.01).
Attribute AdamWAttr::parse(AsmParser &parser, Type) {
  double lr = 0, beta1 = 0.9, beta2 = 0.999, eps = 1e-8, wd = 0.01;
  SMLoc start = parser.getCurrentLocation();
  if (failed(parseNamedFloats(parser, "adamw",
                              {{"lr", &lr},
                               {"beta1", &beta1},
                               {"beta2", &beta2},
                               {"eps", &eps},
                               {"weight_decay", &wd}})))
    return {};
  return parser.getChecked<AdamWAttr>(start, parser.getContext(), llvm::APFloat(lr),
                                      llvm::APFloat(beta1), llvm::APFloat(beta2),
                                      llvm::APFloat(eps), llvm::APFloat(wd));
}

LogicalResult AdamWAttr::verify(llvm::function_ref<InFlightDiagnostic()> emitError,
                                llvm::APFloat lr, llvm::APFloat beta1, llvm::APFloat beta2,
                                llvm::APFloat eps, llvm::APFloat weightDecay) {
  double b1 = beta1.convertToDouble(), b2 = beta2.convertToDouble();
  if (!(b1 >= 0 && b1 < 1) || !(b2 >= 0 && b2 < 1))
    return emitError() << "#sbp.adamw betas must lie in [0, 1), got beta1 = " << b1
                       << ", beta2 = " << b2;
  if (!(eps.convertToDouble() > 0))
    return emitError() << "#sbp.adamw eps must be positive, got " << eps.convertToDouble();
  if (!(lr.convertToDouble() > 0) || !(weightDecay.convertToDouble() >= 0))
    return emitError() << "#sbp.adamw needs lr > 0 and weight_decay >= 0, got lr = "
                       << lr.convertToDouble()
                       << ", weight_decay = " << weightDecay.convertToDouble();
  return success();
}

void AdamWAttr::print(AsmPrinter &printer) const {
  printNamedFloats(printer, {{"lr", getLr()},
                             {"beta1", getBeta1()},
                             {"beta2", getBeta2()},
                             {"eps", getEps()},
                             {"weight_decay", getWeightDecay()}});
}
