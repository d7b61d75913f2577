"""Coverage of height-xgb v4's conformal band per true-height bin on its test blocks (reported).

    PYTHONPATH=.:services/lib nice -n 10 .venv/bin/python -m models.height_xgb.band_by_height
"""
import sys, hashlib, numpy as np, pandas as pd
from pathlib import Path
from urbanfabric.attributes.features import footprint_features
from urbanfabric.attributes.height import HeightModel
from urbanfabric.attributes.measurements import clean_heights, load_footprint_heights
from models.height_xgb.image_features import xiamen_image_features
from models.height_xgb.train import DEFAULT_DATA, XIAMEN, spatial_block_split
p=DEFAULT_DATA/XIAMEN; sha=hashlib.sha256(p.read_bytes()).hexdigest()
gdf,_=clean_heights(load_footprint_heights(p,'H')); gdf=gdf.reset_index(drop=True); y=gdf.height_m.to_numpy()
img,_,_=xiamen_image_features(gdf,DEFAULT_DATA,sha,Path(sys.argv[1] if len(sys.argv) > 1 else '/work/cache-height'))
X=pd.concat([footprint_features(gdf),img],axis=1)
test,_=spatial_block_split(gdf,500.0,0.2,0)
m=HeightModel.load('models/height_xgb/v4'); mean,lo,hi=m.predict(X.loc[test,list(m.feature_names)])
yt=y[test]
for a,b in ((0,10),(10,30),(30,50),(50,1e9)):
    s=(yt>=a)&(yt<b); print(a,b,s.sum(), round(np.mean((yt[s]>=lo[s])&(yt[s]<=hi[s])),3), round(np.mean(hi[s]-lo[s]),1))
print('below p05',np.mean(yt<lo),'above p95',np.mean(yt>hi))
