"""Automatic region maps from a box-prompted SAM-family model (LiteMedSAM).

SAM's own automatic generator prompts a 32 x 32 grid of points and keeps masks whose
predicted IoU and stability are high. LiteMedSAM was trained with box prompts only, and
on a CT slice a 16 x 16 point grid kept no mask at SAM's thresholds (issue 23). So
`BoxGridMaskGenerator` prompts a few boxes on two scales instead (about 30 on a full
slice, fewer where boxes only hold flat background), decodes them in one batch, and
keeps SAM's filters (predicted IoU, stability, NMS) with thresholds measured on this
model (benchmarks/regions_medsam.py). A point grid is kept as an option for comparison.

    gen = BoxGridMaskGenerator(model)                  # set up once
    labels = gen.generate(embedding, image, (h, w))    # one slice's label map

Cost model: the mask decoder's cost per prompt is its two-way transformer over every
image token plus the upscaling of the updated tokens; both scale with the token grid.
Decoding on a 32 x 32 grid (the 64 x 64 image embedding average-pooled 2 x 2, with the
positional encoding evaluated on the coarser grid) costs about a quarter of the native
grid and gives 128 x 128 masks: RAT reads region maps at a quarter of a 512-px slice's
resolution anyway.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

__all__ = ["BoxGridMaskGenerator", "box_grid", "masks_to_regions"]

PROMPT_BATCH = 64  # prompts per decoder call (memory: 64 x 32 x 128^2 floats upscaled)


class BoxGridMaskGenerator:
    """Box-grid prompts -> filtered masks -> one (h, w) label map per slice.

    model: LiteMedSAM (image_encoder, prompt_encoder, mask_decoder of SAM's design).
    box_sizes: box edges in the 256-px model frame; boxes of each size tile the image
        with 3/4-box stride, so the two default sizes give 9 + 25 boxes on a full frame.
    min_std: boxes (or point neighbourhoods) whose normalised image has a smaller
        standard deviation are flat background and are not prompted.
    iou_thresh: keep masks whose predicted IoU is at least this.
    stability_thresh: keep masks whose stability score (IoU of the mask thresholded at
        logit +1 and at -1, SAM's definition) is at least this.
    nms_thresh: drop a mask whose IoU with a better-scoring kept mask exceeds this.
    min_area: masks, and pieces of regions, smaller than this fraction of the image are
        dropped or given to their nearest region.
    decode_grid: token grid of the decoder (64: native; 32: pooled, 4x cheaper).
    prompts: "boxes", "points" (a points_per_side grid of single positive points, SAM's
        automatic prompts) or "both".
    min_support: keep masks of which at least this fraction of the outline lies on the
        image's strongest edges (`image_edges`): where a box holds no object (air,
        lung, background) the model still answers with a rounded blob inside the box,
        with confident IoU and stability, and only its outline on flat image gives it
        away.
    min_box_edges: boxes of which less than this fraction lies on those edges are not
        decoded: their masks failed `min_support` anyway. On 14 CT, PET and H&E slices
        (benchmarks/regions_medsam.py) 0.3 skipped 17-31 % of the CT boxes and none
        whose mask was kept (the lowest kept box had 0.37), so maps are unchanged and
        decoding (a third of a map's time) is cheaper by as much. 0: decode every box.
    """

    def __init__(
        self,
        model: torch.nn.Module,
        *,
        box_sizes: tuple[int, ...] = (128, 64),
        min_std: float = 0.02,
        iou_thresh: float = 0.6,
        stability_thresh: float = 0.6,
        nms_thresh: float = 0.6,
        min_area: float = 0.002,
        decode_grid: int = 32,
        prompts: str = "boxes",
        points_per_side: int = 8,
        min_support: float = 0.6,
        min_box_edges: float = 0.3,
    ) -> None:
        if prompts not in ("boxes", "points", "both"):
            raise ValueError(f"prompts must be boxes, points or both, got {prompts!r}")
        if decode_grid < 1 or 64 % decode_grid:
            raise ValueError("decode_grid must divide 64")
        self.model = model
        self.box_sizes = tuple(box_sizes)
        self.min_std = min_std
        self.iou_thresh = iou_thresh
        self.stability_thresh = stability_thresh
        self.nms_thresh = nms_thresh
        self.min_area = min_area
        self.decode_grid = decode_grid
        self.prompts = prompts
        self.points_per_side = points_per_side
        self.min_support = min_support
        self.min_box_edges = min_box_edges
        self.last_prompts = 0  # prompts decoded for the last slice (reports, tests)

    @torch.inference_mode()
    def generate(self, embedding: torch.Tensor, image: torch.Tensor,
                 valid: tuple[int, int]) -> np.ndarray:
        """One slice's label map.

        embedding: (1, 256, 64, 64) the encoder's output; image: (3, 256, 256) the
        normalised, padded model input; valid: (h, w) of the image inside the frame.
        Returns (mh, mw) int32 labels 1..k over the valid area at mask resolution
        (4 x decode_grid per 256 px), every pixel labelled.
        """
        m = 4 * self.decode_grid  # the decoder's mask edge
        mh, mw = (-(-v * m // image.shape[-1]) for v in valid)
        edges = _image_edges(image, valid, (mh, mw))
        boxes, points = self._prompts(image, valid, edges)
        self.last_prompts = len(boxes) + len(points)
        logits, iou = self._decode(embedding, boxes, points)  # (N, m, m), (N,)
        logits = logits[:, :mh, :mw]
        support = _edge_support(logits > 0, edges)
        masks = self._filter(logits, iou, support)
        return masks_to_regions(masks, (mh, mw), min_px=self._min_px(mh, mw))

    # -- private steps, in call order --------------------------------------------------

    def _prompts(self, image: torch.Tensor, valid: tuple[int, int], edges: np.ndarray
                 ) -> tuple[torch.Tensor, torch.Tensor]:
        """Boxes (B, 4) xyxy and points (P, 2) xy in the 256 frame; flat ones, and boxes
        with too little of `edges` (mask resolution) in them, dropped."""
        h, w = valid
        grey = image.mean(0)  # (256, 256)
        boxes = torch.zeros(0, 4)
        points = torch.zeros(0, 2)
        if self.prompts in ("boxes", "both"):
            boxes = box_grid(h, w, self.box_sizes)
            f = 4 * self.decode_grid / image.shape[-1]  # 256 frame -> mask pixels
            keep = [float(grey[int(y0):int(y1), int(x0):int(x1)].std()) >= self.min_std
                    and float(edges[int(y0 * f):int(np.ceil(y1 * f)),
                                    int(x0 * f):int(np.ceil(x1 * f))].mean())
                    >= self.min_box_edges
                    for x0, y0, x1, y1 in boxes.tolist()]
            boxes = boxes[torch.tensor(keep, dtype=torch.bool)]
        if self.prompts in ("points", "both"):
            points = _point_grid(h, w, self.points_per_side)
            r = max(4, min(h, w) // (2 * self.points_per_side))
            keep = [float(grey[max(0, int(y) - r):int(y) + r,
                               max(0, int(x) - r):int(x) + r].std()) >= self.min_std
                    for x, y in points.tolist()]
            points = points[torch.tensor(keep, dtype=torch.bool)]
        return boxes, points

    def _decode(self, embedding: torch.Tensor, boxes: torch.Tensor, points: torch.Tensor
                ) -> tuple[torch.Tensor, torch.Tensor]:
        """Mask logits (N, m, m) float32 and predicted IoU (N,) for boxes then points,
        decoded PROMPT_BATCH at a time on the decode grid."""
        pe_enc, dec = self.model.prompt_encoder, self.model.mask_decoder
        device = embedding.device
        g = self.decode_grid
        emb = embedding if g == embedding.shape[-1] else F.adaptive_avg_pool2d(embedding, g)
        # the decoder runs in the embedding's dtype (bfloat16 on some CPUs, see
        # medsam_model.load_litemedsam); the prompt encoder stays float32
        dtype = emb.dtype
        pe = pe_enc.pe_layer((g, g))[None].to(dtype)  # (1, 256, g, g) positional encoding
        prompts = [("box", b) for b in boxes] + [("point", p) for p in points]
        logits, ious = [], []
        for start in range(0, len(prompts), PROMPT_BATCH):
            chunk = prompts[start:start + PROMPT_BATCH]
            kind = [k for k, _ in chunk]
            sparse = []
            if "box" in kind:
                b = torch.stack([v for k, v in chunk if k == "box"]).to(device)
                sparse.append(pe_enc(points=None, boxes=b, masks=None)[0])
            if "point" in kind:
                p = torch.stack([v for k, v in chunk if k == "point"]).to(device)[:, None]
                labels = torch.ones(p.shape[:2], device=device)
                sparse.append(pe_enc(points=(p, labels), boxes=None, masks=None)[0])
            for sp in sparse:  # boxes: 2 tokens each, points: 2 (one padding point)
                sp = sp.to(dtype)
                dense = pe_enc.no_mask_embed.weight.reshape(1, -1, 1, 1).to(dtype).expand(
                    sp.shape[0], -1, g, g)
                lo, iou = dec(image_embeddings=emb, image_pe=pe, sparse_prompt_embeddings=sp,
                              dense_prompt_embeddings=dense, multimask_output=False)
                logits.append(lo[:, 0].float())
                ious.append(iou[:, 0].float())
        if not logits:
            return torch.zeros(0, 4 * g, 4 * g), torch.zeros(0)
        return torch.cat(logits).cpu(), torch.cat(ious).cpu()

    def _filter(self, logits: torch.Tensor, iou: torch.Tensor, support: torch.Tensor
                ) -> list[np.ndarray]:
        """Masks (bool (mh, mw) each) that pass IoU, stability, size, edge support and
        NMS, best first."""
        if len(logits) == 0:
            return []
        masks = logits > 0
        hi, lo = (logits > 1.0).flatten(1).sum(1), (logits > -1.0).flatten(1).sum(1)
        stability = hi.float() / lo.clamp(min=1).float()
        area = masks.flatten(1).sum(1).float() / masks[0].numel()
        ok = ((iou >= self.iou_thresh) & (stability >= self.stability_thresh)
              & (area >= self.min_area) & (area <= 0.95) & (support >= self.min_support))
        idx = torch.nonzero(ok)[:, 0]
        if len(idx) == 0:
            return []
        score = (iou * stability)[idx]
        order = idx[torch.sort(-score, stable=True).indices]  # ties keep prompt order
        flat = masks[order].flatten(1).float()  # (K, P)
        inter = flat @ flat.T
        areas = flat.sum(1)
        union = areas[:, None] + areas[None, :] - inter
        overlap = inter / union.clamp(min=1)
        kept: list[int] = []
        for i in range(len(order)):
            if all(float(overlap[i, j]) <= self.nms_thresh for j in kept):
                kept.append(i)
        return [masks[int(order[i])].numpy() for i in kept]

    def _min_px(self, h: int, w: int) -> int:
        return max(1, int(round(self.min_area * h * w)))


def _edge_support(masks: torch.Tensor, edges: np.ndarray) -> torch.Tensor:
    """Fraction of each mask's outline that lies on an image edge.

    masks: (N, mh, mw) bool; edges: (mh, mw) bool. Returns (N,) float32 (1 for an empty
    outline, so that an empty mask is judged by its area alone).
    """
    from scipy import ndimage

    out = torch.ones(len(masks))
    for i, m in enumerate(masks.numpy()):
        outline = m & ~ndimage.binary_erosion(m, border_value=1)
        # the image's own border is no evidence either way
        outline[0, :] = outline[-1, :] = outline[:, 0] = outline[:, -1] = False
        if outline.any():
            out[i] = float(edges[outline].mean())
    return out


def _image_edges(image: torch.Tensor, valid: tuple[int, int], shape: tuple[int, int], *,
                top: float = 0.25, sigma: float = 2.0) -> np.ndarray:
    """(mh, mw) bool: the `top` fraction of the strongest gradients of the model input
    (grey, smoothed by `sigma` px of the 256 frame: structure, not noise or single
    nuclei) at mask resolution, widened by 1 mask pixel."""
    from scipy import ndimage

    h, w = valid
    grey = image.mean(0)[:h, :w].numpy()
    grey = ndimage.gaussian_filter(grey, sigma)
    mag = np.hypot(ndimage.sobel(grey, 0), ndimage.sobel(grey, 1))
    mh, mw = shape
    ys = np.minimum((np.arange(mh) + 0.5) * h / mh, h - 1).astype(int)
    xs = np.minimum((np.arange(mw) + 0.5) * w / mw, w - 1).astype(int)
    mag = ndimage.maximum_filter(mag, size=max(1, round(h / mh)))[ys[:, None], xs[None, :]]
    edges = mag >= np.quantile(mag, 1.0 - top)
    return ndimage.binary_dilation(edges)


def box_grid(h: int, w: int, sizes: tuple[int, ...]) -> torch.Tensor:
    """(N, 4) float32 xyxy boxes tiling an h x w image: per size s (clipped to the
    image), evenly spaced boxes with a stride of at most 3s/4, larger sizes first."""
    out = []
    for s in sizes:
        sy, sx = min(s, h), min(s, w)
        ny, nx = (max(1, -(-(L - e) * 4 // (3 * e)) + 1) for L, e in ((h, sy), (w, sx)))
        for y in np.linspace(0, h - sy, ny).round():
            for x in np.linspace(0, w - sx, nx).round():
                out.append((x, y, x + sx, y + sy))
    return torch.tensor(out, dtype=torch.float32).reshape(-1, 4)


def _point_grid(h: int, w: int, n: int) -> torch.Tensor:
    """(n*n, 2) float32 xy points at the centres of an n x n grid over h x w."""
    ys = (np.arange(n) + 0.5) * h / n
    xs = (np.arange(n) + 0.5) * w / n
    return torch.tensor([(x, y) for y in ys for x in xs], dtype=torch.float32)


def masks_to_regions(masks: list[np.ndarray], shape: tuple[int, int], *,
                     min_px: int) -> np.ndarray:
    """Masks -> (H, W) int32 labels 1..k covering every pixel.

    Painted as the spec's SAM maps are (largest first, so smaller masks overwrite
    larger ones); then each connected piece of what no mask covers becomes a region of
    its own, and pieces smaller than `min_px` (slivers left between masks) join the
    region nearest to them. Labels are numbered by first pixel (row-major).
    """
    from scipy import ndimage

    labels = np.zeros(shape, dtype=np.int32)
    areas = [int(m.sum()) for m in masks]
    for k, i in enumerate(sorted(range(len(masks)), key=lambda i: -areas[i]), start=1):
        labels[masks[i]] = k
    n = len(masks)
    pieces, count = ndimage.label(labels == 0)
    labels[pieces > 0] = pieces[pieces > 0] + n
    # pieces below min_px (of any region) go to the nearest big piece
    small = np.zeros(shape, dtype=bool)
    for value in np.unique(labels):
        comp, _ = ndimage.label(labels == value)
        sizes = np.bincount(comp.ravel())
        tiny = sizes < min_px
        tiny[0] = False
        small |= tiny[comp]
    if small.all():
        return np.ones(shape, dtype=np.int32)
    if small.any():
        _, (iy, ix) = ndimage.distance_transform_edt(small, return_indices=True)
        labels = labels[iy, ix]
    _, first, inverse = np.unique(labels.ravel(), return_index=True, return_inverse=True)
    rank = np.argsort(np.argsort(first))
    return (rank[inverse] + 1).reshape(shape).astype(np.int32)
