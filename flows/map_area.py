"""The ``map-area`` flow: imagery (or user footprints) in, a buildings GeoParquet out.

Steps (each a Prefect task, each calling plain functions of :mod:`urbanfabric.runtime.jobs`):

1. resolve the imagery source (register the sample imagery as a STAC catalog when asked for
   ``sample:<name>``) and check that the area overlaps it;
2. split the area into grid tiles and publish ``TileTask`` messages through a bounded window
   (``worker_replicas`` × ``in_flight_per_worker`` unanswered at most; tiles whose commit
   marker exists — a resumed job — are not published again); tile workers acquire, calibrate
   and segment; each ``TileResult`` is folded into counts as it arrives;
3. join pieces split by tile borders — tile by tile as each tile's neighbourhood completes
   (``seams="tile"``, the default: :class:`urbanfabric.runtime.tile_router.TileRouter`) or
   globally (``seams="global"``: gather, ``merge_seams``) — cut them into batches of neighbours
   and publish ``BuildingBatch`` messages through the same kind of window; building workers
   classify roofs, predict heights and estimate material stock;
4. aggregate the batches into ``jobs/<job>/outputs/buildings/`` (a Hive-partitioned GeoParquet
   1.1 dataset, ``quadkey=<key>/part-*.parquet``, plus the single-file convenience copy
   ``buildings.parquet`` unless ``outputs.single_file`` is off), grids, a map, a report and a
   STAC collection, partition by partition, then write the ``_SUCCESS`` marker last.

With ``footprints`` given, step 2 only acquires and calibrates imagery for roof chips (or is
skipped when there is no imagery) and the user's polygons replace segmentation: the file is
streamed into spatial cells under ``inputs/footprints/`` (never loaded whole) and batches are
cut one cell at a time.
"""


import dataclasses
import json
import time
from collections import defaultdict
from functools import partial
from typing import Any

import geopandas as gpd
from prefect import flow, get_run_logger, task
from prefect.cache_policies import NO_CACHE

from urbanfabric.attributes.context import AreaFrame, CellContext, select_context
from urbanfabric.imagery import acquisition
from urbanfabric.runtime import bus, jobs
from urbanfabric.runtime.tile_router import TileRouter
from urbanfabric.outputs.job_outputs import write_job_outputs
from urbanfabric.outputs.partitions import PartitionOptions
from urbanfabric.outputs.summary import Summary
from urbanfabric.stock.intensity import default_table
from urbanfabric.runtime.connections import call, model_client, stub
from urbanfabric.runtime.convert import tile_to_proto
from urbanfabric.footprints.options import SegmentationOptions
from urbanfabric.job_spec import ImageryOptions, JobSpec, LandCoverOptions, OutputOptions
from urbanfabric.settings import Settings
from urbanfabric.errors import InvalidInput, NotFound, Unavailable
from urbanfabric.footprints.user_footprints import clip_to_area
from urbanfabric.footprints.staging import read_cell, stage_footprints, unused_rows_warning
from urbanfabric.io.job_inputs import local_copy, read_districts, stage_input
from urbanfabric.imagery.tiles import GRID_GSD_TOLERANCE, grid_gsd, tiles_for_area
from urbanfabric.imagery.landcover import check as check_raster
from urbanfabric.imagery.landcover import parse_classes
from urbanfabric.io.geoparquet import read_geoparquet
from urbanfabric.io.job_layout import JobLayout
from urbanfabric.io.model_repository import SHARED_DATA, model_exists, model_gsd, model_gsd_range
from urbanfabric.footprints.ownership import tile_seam_defects
from urbanfabric.footprints.seams import merge_seams, seam_defects
from urbanfabric.io.rasters import COG_MEDIA_TYPE
from urbanfabric.imagery.samples import SAMPLE_SOURCES
from urbanfabric.imagery.settlement import SettlementMask, filter_settled
from urbanfabric.io.stac import read_catalog
from urbanfabric.io.object_store import ObjectStore, gdal_env
from urbanfabric.v1 import acquisition_pb2, common_pb2, tasks_pb2



def landcover_filter_spec(store: ObjectStore, job_id: str, options: LandCoverOptions) -> common_pb2.LandCoverFilter | None:
    """The segmentation's land-cover filter, checked before any tile is published.

    Local files are uploaded under the job's ``inputs/`` so every service can read them
    (:func:`urbanfabric.io.job_inputs.stage_input`).

    Raises:
        InvalidInput: unknown class scheme, missing or unreadable raster (field named).
    """
    if not options.raster:
        if options.settlement:
            raise InvalidInput("landcover.settlement", "a settlement raster needs landcover.raster")
        return None
    parse_classes(options.classes)
    refs = {}
    for field, path in (("raster", options.raster), ("settlement", options.settlement)):
        if path:
            uri = stage_input(store, job_id, path, f"landcover.{field}", f"landcover-{field}.tif")
            with gdal_env(store.settings):
                check_raster(uri, f"landcover.{field}")
            refs[field] = common_pb2.ObjectRef(uri=uri, media_type=COG_MEDIA_TYPE)
    return common_pb2.LandCoverFilter(raster=refs["raster"], classes=options.classes,
                                      settlement=refs.get("settlement"))


def imagery_source(catalog_uri: str, cogs: list[str], options: ImageryOptions,
                   expected_gsd_m: float = 0.0) -> common_pb2.ImagerySource:
    """The ImagerySource every tile task carries."""
    return common_pb2.ImagerySource(
        catalog_uri=catalog_uri, cog_uris=cogs, bands=options.bands, collections=options.collections,
        year=options.year or 0, fallback_years=options.fallback_years or -1,
        max_cloud_cover=options.max_cloud_cover or 1e-9, basemap_uri=options.basemap,
        resampling=options.resampling, expected_gsd_m=expected_gsd_m)


def _model_gsd(ref: common_pb2.ModelRef) -> tuple[float, tuple[float, float] | None]:
    """The GSD a segmentation model prefers and the range it was trained at (0, None when its
    config does not say)."""
    if not ref.name:
        return 0.0, None
    try:
        return model_gsd(ref.name, ref.version) or 0.0, model_gsd_range(ref.name, ref.version)
    except NotFound:
        return 0.0, None


def tile_gsd(refs: dict[str, common_pb2.ModelRef], ensemble: list[str],
             source_gsd_m: float | None) -> tuple[float, list[str]]:
    """The ground pixel the tiles' rasters are cut at (:func:`urbanfabric.imagery.tiles.grid_gsd`
    of the source's GSD and the segmentation model's; 0 when the model does not say). An
    ensemble is read once, on its first member's grid (the members' windows share one raster);
    a member trained at other GSDs gets a warning."""
    gsd, span = _model_gsd(refs["segmentation"])
    if not gsd:
        return 0.0, []
    grid = grid_gsd(source_gsd_m, gsd, span)
    warnings = []
    for ref in ensemble:
        other, other_span = _model_gsd(jobs.parse_model(ref, "segmentation.ensemble"))
        lo, hi = other_span or (other, other)
        if other and not lo / (1 + GRID_GSD_TOLERANCE) <= grid <= hi * (1 + GRID_GSD_TOLERANCE):
            warnings.append(f"segmentation.ensemble: {ref} was trained at {lo:g}–{hi:g} m but reads the "
                            f"first member's {grid:.2f} m grid")
    return grid, warnings


@task(name="area-statistics", cache_policy=NO_CACHE)
def area_statistics(settings: Settings, job: common_pb2.JobRef, source: common_pb2.ImagerySource,
                    tiles: list) -> common_pb2.ObjectRef:
    """Band quartiles over the whole area, for calibration per city."""
    log = get_run_logger()
    resp = call(stub(settings, "acquisition").AreaStatistics, acquisition_pb2.AreaStatisticsRequest(
        job=job, source=source, tiles=[tile_to_proto(t) for t in tiles]), 600)
    log.info("area statistics over %d tiles (%d skipped): %s", resp.tiles_used, len(resp.skipped),
             [(round(b.q1, 1), round(b.q3, 1)) for b in resp.bands])
    return resp.stats


@task(name="resolve-imagery", cache_policy=NO_CACHE)
def resolve_imagery(settings: Settings, store: ObjectStore, job: common_pb2.JobRef, imagery: str,
                    bbox: tuple[float, float, float, float] | None = None,
                    collections: list[str] | None = None) -> tuple[str, list]:
    """Catalog URI and items of the imagery source (registering a sample source once)."""
    log = get_run_logger()
    if imagery.startswith("sample:"):
        name = imagery.split(":", 1)[1]
        if name not in SAMPLE_SOURCES:
            raise InvalidInput("imagery", f"unknown sample source {name!r}; known: {sorted(SAMPLE_SOURCES)}")
        key = f"sources/{name}/catalog.json"
        if not store.exists(key):
            folder, zoom = SAMPLE_SOURCES[name]
            path = SHARED_DATA / folder
            if not path.is_dir():
                raise NotFound(f"imagery: sample data folder {path} is missing")
            log.info("registering sample imagery %s (COGs + STAC catalog)…", name)
            resp = call(stub(settings, "acquisition").RegisterSource, acquisition_pb2.RegisterSourceRequest(
                job=job, source_id=name, path=str(path), format=acquisition_pb2.SOURCE_FORMAT_XYZ_TILES,
                zoom=zoom), 600)
            log.info("registered %d items at %s", resp.item_count, resp.catalog.uri)
        catalog_uri = store.s3_uri(key)
    elif imagery.startswith("s3://"):
        catalog_uri = imagery
    elif imagery.startswith(("http://", "https://", "cogs:")):
        # A STAC API (searched over the area), a static catalog URL, or a plain COG list.
        catalog_uri, _, items = acquisition.source_items(imagery, store, bbox, collections)
        return catalog_uri, items
    else:
        raise InvalidInput("imagery", "expected 'sample:<name>', an s3:// URI of a STAC catalog.json, "
                           "a STAC API / catalog http(s) URL, or 'cogs:<url>,<url>'")
    try:
        items = acquisition.catalog_items(read_catalog(catalog_uri, store))
    except NotFound as exc:
        raise NotFound(f"imagery: no STAC catalog at {catalog_uri}") from exc
    return catalog_uri, items


@task(name="check-models", cache_policy=NO_CACHE)
def check_models(settings: Settings, spec: JobSpec) -> dict[str, common_pb2.ModelRef]:
    """Fail before any work when a requested model version does not exist or is not served."""
    models = spec.models
    wanted = {"segmentation.model": spec.segmentation.model if spec.segment else "",
              "models.roof_material": models.roof_material, "models.height": models.height,
              "models.roof_shape": models.roof_shape, "models.facade_material": models.facade_material,
              "models.structure": models.structure, "models.age": models.age}
    # An empty name skips that stage's model (e.g. no roof materials).
    refs = {k: jobs.parse_model(v, k) if v else common_pb2.ModelRef() for k, v in wanted.items()}
    members = [jobs.parse_model(v, "segmentation.ensemble") for v in spec.segmentation.ensemble] \
        if spec.segment else []
    client = model_client(settings, timeout_s=10)
    for key, ref in [*refs.items(), *(("segmentation.ensemble", m) for m in members)]:
        if not ref.name:
            continue
        # Served versions come from the model store (the tree when there is none).
        if not model_exists(ref.name, ref.version):
            raise NotFound(f"{key}: unknown model version {ref.name}:{ref.version}")
        # The height, age and structure models run inside their services, not on the model server.
        # served(): Unavailable (retried by the caller) while the server cannot be reached, not
        # "not served" — a restarting model server is not a missing model.
        if key not in ("models.height", "models.age", "models.structure") and not client.served(ref.name, ref.version):
            # A version in the store but not loaded (one the learning loop registered before the
            # model server restarted): ask the server to load it, as `urbanfabric learn` did.
            try:
                client.load(ref.name, ref.version)
            except (NotFound, Unavailable, InvalidInput) as exc:
                raise NotFound(f"{key}: {ref.name}:{ref.version} is not served by the model server ({exc})") from None
    return {k.split(".", 1)[1] if k.startswith("models.") else "segmentation": v for k, v in refs.items()}


@task(name="process-tiles", cache_policy=NO_CACHE)
def process_tiles(settings: Settings, job: common_pb2.JobRef, tiles: list, source: common_pb2.ImagerySource,
                  segmentation: SegmentationOptions, halo_px: int, segment: bool, timeout_s: float,
                  area_stats: common_pb2.ObjectRef | None = None,
                  landcover_spec: common_pb2.LandCoverFilter | None = None,
                  window: int = jobs.IN_FLIGHT_PER_WORKER, per_tile_seams: bool = False,
                  bbox: tuple[float, float, float, float] | None = None,
                  ) -> tuple[list, list[str], dict[str, float], dict[str, int] | None, dict[str, int]]:
    """Tile tasks through a bounded window (:func:`urbanfabric.runtime.jobs.run_windowed`):
    tiles already done (a resumed job: their commit marker exists) are not published again.
    With ``per_tile_seams`` a :class:`TileRouter` resolves each tile's owned buildings as its
    neighbourhood completes (returned: tile id → buildings owned); last, the window's counts."""
    log = get_run_logger()
    store = ObjectStore(settings)
    layout = JobLayout(job.job_id)
    tally = jobs.TileTally({t.tile_id: i for i, t in enumerate(tiles)})
    router = TileRouter(store, job.job_id, tiles, tally, bbox) if per_tile_seams else None
    send, receive = jobs.Publisher(settings, bus.TILES), jobs.ResultStream(
        settings, bus.TILE_RESULTS, tasks_pb2.TileResult, job)
    every = max(1, len(tiles) // 20)
    try:
        counts = jobs.run_windowed(
            jobs.iter_tile_tasks(job, tiles, source, segmentation, halo_px, segment, area_stats, landcover_spec),
            send, receive, lambda r: r.tile.tile_id, router or tally, window, timeout_s,
            resumed=jobs.stored_result(store, layout.tile_done, tasks_pb2.TileResult),
            progress=lambda c: log.info("tiles %d/%d done", c.done, len(tiles)) if c.done % every == 0 else None)
    finally:
        send.close()
        receive.close()
    log.info("tiles: %s (window %d)", counts.as_dict(), window)
    # Tiles failing on bad input are skipped with a warning; any other failure stops the job.
    kept, warnings = tally.finish()
    for w in warnings:
        log.warning(w)
    if router is not None:
        log.info("per-tile seams: %d tiles resolved, %d buildings owned, at most %d tiles' footprints held",
                 len(router.owned), sum(router.owned.values()), router.peak_frontier)
    return kept, warnings, tally.stage_seconds, router.owned if router is not None else None, counts.as_dict()


@task(name="process-buildings", cache_policy=NO_CACHE)
def process_buildings(settings: Settings, job: common_pb2.JobRef, batches: Any, template: tasks_pb2.BuildingBatch,
                      tile_results: list, timeout_s: float, window: int = jobs.IN_FLIGHT_PER_WORKER,
                      context_of: Any = None) -> tuple[list, dict[str, float], dict[str, int]]:
    """Building batches through a bounded window: ``batches`` yields ``(batch_id, footprints)``
    lazily; a batch's footprints (and its context, ``context_of(footprints)``: the job's
    footprints around it) are only written when it is published, and batches already done
    (their commit marker exists) are neither written nor published. Returns the lean results,
    the summed stage seconds and the window's counts."""
    log = get_run_logger()
    store = ObjectStore(settings)
    layout = JobLayout(job.job_id)
    images = jobs.ImageIndex(tile_results)
    tally = jobs.BatchTally()

    def tasks():
        for batch_id, frame in batches:
            yield batch_id, lambda b=batch_id, f=frame: jobs.batch_task(
                store, template, b, f, images, context_of(f) if context_of is not None else None)

    send, receive = jobs.Publisher(settings, bus.BUILDINGS), jobs.ResultStream(
        settings, bus.BUILDING_RESULTS, tasks_pb2.BuildingBatchResult, job)
    try:
        counts = jobs.run_windowed(
            tasks(), send, receive, lambda r: r.batch_id, tally, window, timeout_s,
            resumed=jobs.stored_result(store, layout.batch_done, tasks_pb2.BuildingBatchResult),
            progress=lambda c: log.info("batches done: %d", c.done) if c.done % 20 == 0 else None)
    finally:
        send.close()
        receive.close()
    log.info("building batches: %s (window %d), %d buildings", counts.as_dict(), window, tally.buildings)
    return tally.finish(), tally.stage_seconds, {**counts.as_dict(), "buildings": tally.buildings}


@task(name="aggregate", cache_policy=NO_CACHE)
def aggregate(store: ObjectStore, job_id: str, batch_results: list, tile_results: list,
              stage_seconds: dict[str, float], parameters: dict[str, Any],
              districts: gpd.GeoDataFrame | None = None, district_id: str = "",
              warnings: list[str] | None = None, options: OutputOptions | None = None,
              area: tuple[float, float, float, float] | None = None) -> Summary:
    """The job's outputs (partitioned table, grids, districts, map, report, STAC) from its
    batches' parts, partition by partition."""
    opts = options or OutputOptions()
    return write_job_outputs(store, job_id, [r.buildings.uri for r in batch_results],
                             [r.ard.uri for r in tile_results if r.ard.uri], stage_seconds, parameters,
                             districts, district_id, warnings,
                             PartitionOptions(zoom=opts.partition_zoom, row_group_rows=opts.row_group_rows,
                                              single_file=opts.single_file, web_tiles=opts.web_tiles), area)


@flow(name="map-area", log_prints=True)
def map_area(spec: JobSpec) -> dict[str, Any]:
    """Map the buildings of an area: footprints, roof material, height, material stock.

    Args:
        spec: the whole job (:class:`urbanfabric.job_spec.JobSpec`): the area, the imagery or
            user footprints, model versions, segmentation, imagery and land-cover options,
            the material-intensity region, batching and time limits. Every field is documented
            in the form; ``urbanfabric run --help`` lists the same fields as flags.
    """
    log = get_run_logger()
    spec = JobSpec.parse(spec)
    area, imagery, footprints, bucket = spec.area, spec.imagery, spec.footprints, spec.bucket
    settings = dataclasses.replace(Settings.load(), bucket=bucket)
    store = ObjectStore(settings)
    store.ensure_bucket()
    job_id = spec.job_id or jobs.new_job_id()
    job = common_pb2.JobRef(job_id=job_id, bucket=bucket, run_id=jobs.new_run_id())
    parameters = spec.model_dump(mode="json", exclude={"job_id"})
    parameters["area"] = area.bbox() if area else None
    started = time.time()
    stage: dict[str, float] = defaultdict(float)
    if spec.refresh:
        jobs.check_refresh(store, job_id)
    jobs.write_job(store, job_id, {"job_id": job_id, "status": "running", "parameters": parameters,
                                   "started": started})
    log.info("job %s: %s", job_id, json.dumps(parameters))
    try:
        region = spec.region
        if region not in default_table().regions:
            # The intensity stage would fall back to the global mix; a typo should fail here.
            raise InvalidInput("region", f"unknown material-intensity region {region!r}; "
                               f"one of {', '.join(default_table().regions)}")
        district_frame = read_districts(store, spec.districts, spec.district_id) if spec.districts else None
        segment = spec.segment
        refs = check_models(settings, spec)
        if spec.refresh:
            # Re-map an earlier job's buildings only: tiles answer from their markers (not redone).
            log.info("refresh %s of job %s: %d earlier building results and outputs removed",
                     ", ".join(spec.refresh), job_id, jobs.forget_buildings(store, job_id))
        landcover_spec = landcover_filter_spec(store, job_id, spec.landcover) if segment else None
        window = jobs.window_size(spec.worker_replicas, spec.in_flight_per_worker)
        user = None
        if footprints:
            # Streamed into spatial cells under the job's inputs/, never loaded whole.
            user = stage_footprints(store, job_id, footprints, area.bbox() if area else None)
            log.info("footprints: %d rows read in %d chunk(s), %d kept in %d cell(s)", user.rows_read,
                     user.chunks, user.count, len(user.cells))
        bbox = area.bbox() if area else user.bounds
        tile_results: list = []
        tiles: list = []
        per_tile = spec.seams == "tile" and segment
        owned: dict[str, int] | None = None
        qa: dict = {}
        warnings: list[str] = []
        if imagery:
            opts = spec.imagery_options
            catalog_uri, items = resolve_imagery(settings, store, job, imagery, bbox, opts.collections)
            if user is None:
                jobs.check_area(bbox, acquisition.catalog_bbox(items) if items else (0, 0, 0, 0), imagery)
            # The tiles' rasters follow the segmentation model's GSD (issue 20, item 0); without
            # segmentation (user footprints) the default 1024 px grid serves the roof chips.
            imagery_gsd = acquisition.source_gsd(items)
            gsd, gsd_warnings = tile_gsd(refs, list(spec.segmentation.ensemble), imagery_gsd) \
                if segment else (0.0, [])
            warnings.extend(gsd_warnings)
            tiles = [t for t in tiles_for_area(bbox, gsd_m=gsd or None) if acquisition.items_for_tile(items, t)]
            if tiles:
                log.info("grid: %d px per zoom-%d tile, %.3f m on the ground (imagery %s m, model grid %s m)",
                         tiles[0].size_px, tiles[0].z, tiles[0].ground_resolution_m,
                         f"{imagery_gsd:.3f}" if imagery_gsd else "unknown", f"{gsd:.3f}" if gsd else "unknown")
            if not tiles and user is None:
                jobs.check_area(bbox, (0, 0, 0, 0), imagery)
            if opts.settlement_mask:
                with local_copy(store, opts.settlement_mask, "settlement_mask") as mask:
                    tiles, unsettled = filter_settled(tiles, SettlementMask.from_path(mask))
                log.info("settlement mask: %d grid cells kept, %d skipped", len(tiles), unsettled)
                if unsettled:
                    warnings.append(f"{unsettled} grid cell(s) skipped: no settlement in {opts.settlement_mask}")
            log.info("%d tiles to process", len(tiles))
            cogs = [u.strip() for u in imagery[len("cogs:"):].split(",") if u.strip()] \
                if imagery.startswith("cogs:") else []
            # The GSD warnings compare each scene with the grid the model reads (its training range).
            source = imagery_source(catalog_uri, cogs, opts, gsd)
            t0 = time.time()
            area_stats = area_statistics(settings, job, source, tiles) \
                if tiles and opts.calibration == "city" else None
            tile_results, tile_warnings, tile_seconds, owned, qa["tiles"] = process_tiles(
                settings, job, tiles, source, spec.segmentation, spec.halo_px, segment, spec.tile_timeout_s,
                area_stats, landcover_spec, window, per_tile and user is None, bbox) \
                if tiles else ([], [], {}, None, {})
            warnings.extend(tile_warnings)
            stage["tiles (wall)"] = time.time() - t0
            for k, v in tile_seconds.items():
                stage[k] += v
        if user is None and owned is not None:
            # Seams already resolved tile by tile; batches come from each tile's owned buildings.
            layout = JobLayout(job_id)
            log.info("%d buildings owned by %d tiles (per-tile seams)",
                     sum(owned.values()), sum(1 for v in owned.values() if v))
            owned_tiles = [t for t, n in owned.items() if n]

            def read_owned(t: str) -> gpd.GeoDataFrame:
                return read_geoparquet(store.get_bytes(layout.tile_owned(t)))

            if imagery:
                # The seam check edge by edge over owned buildings, never the job's table.
                seams = tile_seam_defects(tiles, lambda t: read_owned(t) if owned.get(t) else None)
                qa["seams"] = {"check": seams.text(), "cut_pairs": len(seams.cut_pairs), "flush": len(seams.flush)}
                log.info("seam check (per tile): %s", seams.text())

            context_of = CellContext(owned_tiles, read_owned)
            batches = jobs.cell_batches(owned_tiles, context_of.read, spec.batch_size)
        elif user is None:
            found = jobs.gather_footprints(store, tile_results)
            buildings_in = merge_seams(found) if len(found) else found
            buildings_in = clip_to_area(buildings_in, bbox) if len(buildings_in) else buildings_in
            log.info("%d footprints segmented (%d after seam merge and clipping)", len(found), len(buildings_in))
            seams = seam_defects(buildings_in, tiles) if imagery and len(buildings_in) else None
            if seams is not None:
                qa["seams"] = {"check": seams.text(), "cut_pairs": len(seams.cut_pairs), "flush": len(seams.flush)}
                log.info("seam check: %s", seams.text())
            # Batches of neighbours over the merged area, ids as before (00000, 00001, …).
            batches = ((f"{i:05d}", frame) for i, frame in enumerate(jobs.iter_batches(buildings_in, spec.batch_size)))
            context_of = partial(select_context, candidates=buildings_in)
        else:
            # One spatial cell at a time: the flow holds one cell, never the whole file.
            context_of = CellContext(user.cells, lambda cell: read_cell(store, job_id, cell))
            batches = jobs.cell_batches(user.cells, context_of.read, spec.batch_size)
        template = jobs.batch_template(job, refs["roof_material"], refs["height"], region,
                                       roof_shape_model=refs["roof_shape"], facade_model=refs["facade_material"],
                                       street_views=spec.street_views or "", structure_model=refs["structure"],
                                       age_model=refs["age"],
                                       measured_heights=spec.measured_heights or "",
                                       measured_heights_unit=spec.measured_heights_unit,
                                       area=AreaFrame.from_bbox(bbox) if bbox is not None else None)
        t1 = time.time()
        batch_results, batch_seconds, qa["batches"] = process_buildings(
            settings, job, batches, template, tile_results, spec.batch_timeout_s, window, context_of)
        stage["buildings (wall)"] = time.time() - t1
        for k, v in batch_seconds.items():
            stage[k] += v
        unused = unused_rows_warning(user.rows_read, qa["batches"]["buildings"]) if user is not None else None
        if unused:
            warnings.append(unused)
        summary = aggregate(store, job_id, batch_results, tile_results, dict(stage), parameters,
                            district_frame, spec.district_id, warnings, spec.outputs, bbox)
        store.put_bytes(JobLayout(job_id).success, b"")
        jobs.write_job(store, job_id, {"job_id": job_id, "status": "succeeded", "parameters": parameters,
                                       "started": started, "finished": time.time(),
                                       "summary": dataclasses.asdict(summary), "qa": qa})
        print(summary.text())
        return dataclasses.asdict(summary)
    except Exception as exc:
        jobs.write_job(store, job_id, {"job_id": job_id, "status": "failed", "parameters": parameters,
                                       "started": started, "finished": time.time(),
                                       "error": f"{type(exc).__name__}: {exc}"})
        raise
