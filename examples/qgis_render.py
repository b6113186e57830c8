#!/usr/bin/env python3
"""Open a cd-infer change map in QGIS, headless: the raster with the QGIS style cd-infer
wrote beside it, the change polygons on top, rendered to a PNG; prints what QGIS saw.

    QT_QPA_PLATFORM=offscreen python3 examples/qgis_render.py change.tif change.gpkg map.png

The same layers open in QGIS's desktop by dragging change.tif and change.gpkg in (the style
change.qml loads with the raster). Needs Debian's python3-qgis.
"""
import os
import sys

from qgis.core import (QgsApplication, QgsFillSymbol, QgsMapRendererSequentialJob, QgsMapSettings,
                       QgsRasterLayer, QgsVectorLayer)
from qgis.PyQt.QtCore import QSize
from qgis.PyQt.QtGui import QColor


def main(raster_path: str, polygons_path: str, png_path: str) -> None:
    app = QgsApplication([], False)
    app.initQgis()
    raster = QgsRasterLayer(raster_path, "change")
    msg, style_ok = raster.loadDefaultStyle()
    vector = QgsVectorLayer(polygons_path + "|layername=changes", "changes", "ogr")
    print("raster_valid", raster.isValid())
    print("raster_crs", raster.crs().authid())
    print("style_loaded", style_ok)
    print("renderer", raster.renderer().type())
    print("vector_valid", vector.isValid())
    print("vector_crs", vector.crs().authid())
    print("fields", ",".join(f.name() for f in vector.fields()))
    print("features", vector.featureCount())
    # Polygons as yellow outlines, so that the raster's red shows through them.
    vector.renderer().setSymbol(QgsFillSymbol.createSimple(
        {"color": "0,0,0,0", "outline_color": "255,215,0", "outline_width": "0.3"}))
    # The map: polygons over the raster, the raster's extent, 512 px on the longer side.
    settings = QgsMapSettings()
    settings.setLayers([vector, raster])
    settings.setDestinationCrs(raster.crs())
    settings.setExtent(raster.extent())
    ext = raster.extent()
    scale = 512 / max(ext.width(), ext.height())
    settings.setOutputSize(QSize(max(1, round(ext.width() * scale)), max(1, round(ext.height() * scale))))
    settings.setBackgroundColor(QColor(255, 255, 255))
    job = QgsMapRendererSequentialJob(settings)
    job.start()
    job.waitForFinished()
    print("rendered", job.renderedImage().save(png_path, "PNG"), png_path)
    sys.stdout.flush()
    # Layers must go before QGIS does; PyQGIS can still crash in interpreter teardown, so
    # leave directly once everything is written.
    del raster, vector, job
    app.exitQgis()
    os._exit(0)


if __name__ == "__main__":
    if len(sys.argv) != 4:
        sys.exit("usage: qgis_render.py CHANGE.tif CHANGE.gpkg MAP.png")
    main(*sys.argv[1:4])
