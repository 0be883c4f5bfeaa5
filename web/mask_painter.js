// Mask painting for the Image Gate preview.
//
// The mask is one canvas at the image's full resolution laid over the preview.
// Its alpha channel IS the mask (the server reads alpha from an RGBA PNG), so the
// stroke colour is free to be something that stands out on the image, and the
// canvas' CSS opacity lets the image show through without touching the mask data.

const STROKE_RGB = [255, 64, 129];
const STROKE_COLOR = `rgb(${STROKE_RGB.join(", ")})`;

export class MaskPainter {
    /**
     * @param {HTMLCanvasElement} canvas the overlay canvas, sized by CSS to the shown preview
     * @param {HTMLElement} cursor a ring that follows the pointer, sized like the brush
     */
    constructor(canvas, cursor) {
        this.canvas = canvas;
        this.cursor = cursor;
        this.ctx = canvas.getContext("2d", { willReadFrequently: false });
        this.tool = "brush";
        this.size = 24;
        // Something was drawn since the last clear; checked against the pixels before
        // sending, because an eraser pass can leave an empty canvas behind.
        this.touched = false;
        // A mask loaded from a slot: sent only if the person changed it (a stroke or Clear), so an
        // untouched one keeps every frame's own mask; once changed it is sent even when empty.
        this.loaded = false;
        this.edited = false;
        this.lastPoint = null;
        this.activePointer = null;

        canvas.addEventListener("pointerdown", (event) => this.#down(event));
        canvas.addEventListener("pointermove", (event) => this.#move(event));
        canvas.addEventListener("pointerup", (event) => this.#up(event));
        canvas.addEventListener("pointercancel", (event) => this.#up(event));
        canvas.addEventListener("pointerenter", (event) => this.#showCursor(event));
        canvas.addEventListener("pointerleave", () => { this.cursor.style.display = "none"; });
        // A right click on the preview would open the graph's context menu otherwise.
        canvas.addEventListener("contextmenu", (event) => event.preventDefault());
    }

    /** Start a fresh, empty mask of the image's exact size. */
    reset(width, height) {
        this.canvas.width = Math.max(1, width);
        this.canvas.height = Math.max(1, height);
        this.touched = false;
        this.loaded = false;
        this.edited = false;
        this.lastPoint = null;
    }

    clear() {
        this.ctx.clearRect(0, 0, this.canvas.width, this.canvas.height);
        this.touched = false;
        this.edited = true;
    }

    /** Start from a gray mask image (white = 1.0), such as a slot's mask.png, at the canvas' size. */
    async load(url) {
        const image = new Image();
        image.src = url;
        await image.decode();
        const { width, height } = this.canvas;
        const scratch = document.createElement("canvas");
        scratch.width = width;
        scratch.height = height;
        const scratchCtx = scratch.getContext("2d", { willReadFrequently: true });
        scratchCtx.drawImage(image, 0, 0, width, height);
        const gray = scratchCtx.getImageData(0, 0, width, height).data;
        const mask = this.ctx.createImageData(width, height);
        for (let index = 0; index < gray.length; index += 4) {
            mask.data[index] = STROKE_RGB[0];
            mask.data[index + 1] = STROKE_RGB[1];
            mask.data[index + 2] = STROKE_RGB[2];
            mask.data[index + 3] = gray[index]; // the alpha channel is the mask
        }
        this.ctx.putImageData(mask, 0, 0);
        this.loaded = true;
        this.edited = false;
        this.touched = true;
    }

    /** True when no pixel of the mask has any coverage. */
    isEmpty() {
        if (!this.touched) return true;
        const { data } = this.ctx.getImageData(0, 0, this.canvas.width, this.canvas.height);
        for (let index = 3; index < data.length; index += 4) {
            if (data[index] !== 0) return false;
        }
        return true;
    }

    /** The mask as a PNG data URL (alpha = mask), or null when there is nothing to send. */
    toDataURL() {
        if (this.loaded) return this.edited ? this.canvas.toDataURL("image/png") : null;
        return this.isEmpty() ? null : this.canvas.toDataURL("image/png");
    }

    /** Image pixels per CSS pixel of the shown canvas (the node may be zoomed by a CSS transform). */
    #imagePoint(event) {
        const rect = this.canvas.getBoundingClientRect();
        const x = ((event.clientX - rect.left) / Math.max(rect.width, 1)) * this.canvas.width;
        const y = ((event.clientY - rect.top) / Math.max(rect.height, 1)) * this.canvas.height;
        return { x, y };
    }

    #stroke(from, to) {
        const ctx = this.ctx;
        ctx.save();
        ctx.globalCompositeOperation = this.tool === "eraser" ? "destination-out" : "source-over";
        ctx.strokeStyle = STROKE_COLOR;
        ctx.fillStyle = STROKE_COLOR;
        ctx.lineWidth = this.size;
        ctx.lineCap = "round";
        ctx.lineJoin = "round";
        if (from.x === to.x && from.y === to.y) {
            ctx.beginPath();
            ctx.arc(to.x, to.y, this.size / 2, 0, Math.PI * 2);
            ctx.fill();
        } else {
            ctx.beginPath();
            ctx.moveTo(from.x, from.y);
            ctx.lineTo(to.x, to.y);
            ctx.stroke();
        }
        ctx.restore();
        this.edited = true;
        if (this.tool !== "eraser") this.touched = true;
    }

    #down(event) {
        if (event.button !== 0 || this.activePointer !== null) return;
        event.preventDefault();
        event.stopPropagation();
        this.activePointer = event.pointerId;
        this.canvas.setPointerCapture(event.pointerId);
        const point = this.#imagePoint(event);
        this.#stroke(point, point);
        this.lastPoint = point;
    }

    #move(event) {
        this.#showCursor(event);
        if (event.pointerId !== this.activePointer) return;
        event.preventDefault();
        const events = event.getCoalescedEvents ? event.getCoalescedEvents() : [event];
        for (const sample of events.length ? events : [event]) {
            const point = this.#imagePoint(sample);
            this.#stroke(this.lastPoint, point);
            this.lastPoint = point;
        }
    }

    #up(event) {
        if (event.pointerId !== this.activePointer) return;
        this.activePointer = null;
        this.lastPoint = null;
        if (this.canvas.hasPointerCapture(event.pointerId)) {
            this.canvas.releasePointerCapture(event.pointerId);
        }
    }

    /** The ring is positioned in the canvas' own CSS pixels, before the graph's zoom transform. */
    #showCursor(event) {
        const rect = this.canvas.getBoundingClientRect();
        if (!rect.width || !this.canvas.width) return;
        const cssPerScreen = this.canvas.clientWidth / rect.width;
        const x = (event.clientX - rect.left) * cssPerScreen;
        const y = (event.clientY - rect.top) * cssPerScreen;
        const diameter = Math.max(4, (this.size * this.canvas.clientWidth) / this.canvas.width);
        const style = this.cursor.style;
        style.display = "block";
        style.width = style.height = `${diameter}px`;
        style.transform = `translate(${x - diameter / 2}px, ${y - diameter / 2}px)`;
        this.cursor.classList.toggle("dsg-cursor-eraser", this.tool === "eraser");
    }
}
